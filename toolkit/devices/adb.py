"""`adb:SERIAL`: an Android device through the real adb client."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from toolkit.devices.base import COMMAND_TIMEOUT, RC_MARK, RunResult, Transport, _parse_free_kb, _tool
from toolkit.errors import ToolkitError


class AdbTransport(Transport):
    """`adb:SERIAL`: the real adb client (its server, `-s SERIAL`); SERIAL may be host:port for `adb connect`."""

    kind = "adb"

    def __init__(self, serial: str):
        self.serial = serial
        self.name = f"adb:{serial}"
        self.adb = _tool("adb", "TOOLKIT_ADB")
        self._ready = False

    def _adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=timeout or COMMAND_TIMEOUT, errors="replace")
        except subprocess.TimeoutExpired:
            raise ToolkitError(f"{self.name}: `adb {args[0]}` timed out", hint="check the device (adb devices -l)") from None

    # What the adb client prints when the device is not there at all: the command never reached it.
    _UNREACHED = re.compile(r"^(adb: )?error: (device offline|device '.*' not found|device not found|no devices)", re.M)

    def _adb_device(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """An adb command for the device; when adb says the device is not there (a network device
        that dropped and is being reconnected), reconnect and try once more: nothing ran yet."""
        self.ensure_connected()
        r = self._adb(*args, timeout=timeout)
        if r.returncode != 0 and self._UNREACHED.search(r.stderr + r.stdout):
            self._ready = False
            self.ensure_connected()
            r = self._adb(*args, timeout=timeout)
        return r

    def _state(self) -> str:
        return self._adb("get-state", timeout=30).stdout.strip()

    def ensure_connected(self) -> None:
        """A network device (host:port) that dropped is reconnected; a USB one must be there."""
        if self._ready:
            return
        import time

        state = self._state()
        if state != "device" and re.fullmatch(r"[^\s:]+:\d+", self.serial):
            if state:  # known but offline: adb keeps the stale transport until it is disconnected
                subprocess.run([self.adb, "disconnect", self.serial], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
            subprocess.run([self.adb, "connect", self.serial], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
            deadline = time.monotonic() + 20
            while (state := self._state()) != "device" and time.monotonic() < deadline:
                time.sleep(0.5)
        if state != "device":
            raise ToolkitError(f"{self.name}: device not available (state: {state or 'not found'})",
                               hint="`adb devices -l` lists what is connected; `adb connect HOST:PORT` for a network device")
        self._ready = True

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        """One command for the device's sh. The exit status is printed after it (the legacy shell
        protocol does not carry one; shell v2 does, but both then read the same)."""
        r = self._adb_device("shell", f"{command}\nprintf '\\n{RC_MARK}%d\\n' $?", timeout=timeout)
        out, mark, rc = r.stdout.rpartition(f"\n{RC_MARK}")
        if not mark:
            self._ready = False
            return RunResult(255, r.stdout, r.stderr.strip() or f"adb shell failed (exit status {r.returncode})")
        return RunResult(int(rc.strip() or 255), out, r.stderr)

    def push_dir(self, local: Path, remote: str) -> None:
        r = self._adb_device("push", str(local), remote)
        if r.returncode != 0:
            self._ready = False
            lines = [ln.strip() for ln in (r.stderr + "\n" + r.stdout).replace("\r", "\n").splitlines() if ln.strip()]
            msg = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()] or [ln for ln in lines if not ln.startswith("[")]
            raise ToolkitError(f"{self.name}: push failed: {msg[0] if msg else 'exit status %d' % r.returncode}",
                               hint="nothing was switched: the device still runs its previous release; reconnect and re-run (unchanged files are not sent again)")

    def _pull(self, remote: str, local: Path) -> None:
        r = self._adb_device("pull", remote, str(local))
        if r.returncode != 0:
            lines = [ln.strip() for ln in (r.stderr + "\n" + r.stdout).replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("[")]
            raise self._pull_failed(remote, lines[-1] if lines else f"exit status {r.returncode}")

    def pull_file(self, remote: str, local: Path) -> None:
        self._pull(remote, local)

    def pull_dir(self, remote: str, local: Path) -> None:
        # adb pull DIR LOCAL copies DIR's contents into LOCAL when LOCAL does not exist yet.
        if Path(local).exists():
            raise FileExistsError(local)
        self._pull(remote, local)

    def facts(self, root: str | None = None) -> dict:
        r = self._check("for p in ro.product.cpu.abi ro.product.cpu.abilist ro.product.cpu.abilist64 ro.product.cpu.abilist32 ro.product.model; "
                        'do echo "$(getprop $p)"; done; ' + self._df_script(root or "/data/local/tmp"),
                        "reading the device's properties")
        lines = r.stdout.splitlines()
        abi = lines[0].strip() if lines else ""
        abis: list[str] = [abi] if abi else []
        for ln in lines[1:4]:
            abis += [a for a in ln.strip().split(",") if a and a not in abis]
        free_kb = _parse_free_kb("\n".join(lines[5:]))
        return {"abi": abi or None, "abis": abis, "model": lines[4].strip() if len(lines) > 4 else None,
                "free_bytes": None if free_kb is None else free_kb * 1024}


def adb_devices() -> list[dict]:
    """`adb devices -l`: serial, state and the key:value fields."""
    adb = _tool("adb", "TOOLKIT_ADB")
    r = subprocess.run([adb, "devices", "-l"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        raise ToolkitError(f"`adb devices` failed: {r.stderr.strip()}", hint="check the adb installation")
    out = []
    for ln in r.stdout.splitlines():
        if not ln.strip() or ln.startswith("List of devices") or ln.startswith("*"):
            continue
        parts = ln.split()
        out.append({"serial": parts[0], "state": parts[1] if len(parts) > 1 else "unknown",
                    **dict(p.split(":", 1) for p in parts[2:] if ":" in p)})
    return out
