"""Devices are transports: `dir:PATH`, `adb:SERIAL`, `ssh:user@host[:port]`, one small interface.

Install layout on a device (the same for every transport):
  <root>/releases/<bundle-id>/   one complete bundle per release
  <root>/current -> releases/<bundle-id>   switched in one atomic rename
  <root>/.staging-<bundle-id>/   where a release is assembled before it is renamed into releases/
so a deploy that fails half-way leaves `current` pointing at the previous, complete bundle.

adb and ssh drive the real client binaries with argv lists (no local shell). Every command
run on the device is one string for the device's shell, built only with shlex.quote, so
paths and file names with spaces or shell metacharacters are data, never code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.errors import ToolkitError

KEEP_RELEASES = 2


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    name: str

    def facts(self, root: str | None = None) -> dict: ...          # abi (or None), abis, free_bytes at root
    def current_manifest(self, root: str) -> dict | None: ...
    def install(self, bundle: Path, root: str, release: str, reuse: set[str]) -> dict: ...
    def run(self, argv: list[str], cwd: str | None = None, env: dict | None = None) -> RunResult: ...
    def close(self) -> None: ...


class DirTransport:
    """A folder on this machine standing in for a device's install root."""

    def __init__(self, path: str):
        self.path = Path(path).expanduser().resolve()
        self.name = f"dir:{self.path}"

    def facts(self, root: str | None = None) -> dict:
        self.path.mkdir(parents=True, exist_ok=True)
        return {"abi": None, "free_bytes": shutil.disk_usage(self.path).free}

    def _root(self, root: str) -> Path:
        return self.path

    def current_manifest(self, root: str) -> dict | None:
        import json

        m = self._root(root) / "current" / "manifest.json"
        try:
            return json.loads(m.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def install(self, bundle: Path, root: str, release: str, reuse: set[str]) -> dict:
        """Copy into a staging dir, rename to releases/<release>, then swap `current` atomically.

        Files in `reuse` (unchanged since the current release) are hard-linked, not copied."""
        base = self._root(root)
        releases = base / "releases"
        releases.mkdir(parents=True, exist_ok=True)
        final = releases / release
        current = base / "current"
        sent = linked = 0
        if not final.exists():
            staging = Path(tempfile.mkdtemp(dir=base, prefix=".staging-"))
            try:
                prev = current.resolve() if current.exists() else None
                for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
                    rel = f.relative_to(bundle)
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if prev is not None and str(rel) in reuse and (prev / rel).is_file():
                        os.link(prev / rel, dst)
                        linked += 1
                    else:
                        shutil.copy2(f, dst)
                        sent += 1
                os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        link_tmp = base / f".current-{os.getpid()}"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(Path("releases") / release, link_tmp)
        os.replace(link_tmp, current)
        keep = {release}
        for old in sorted(releases.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            if old.name not in keep and len(keep) < KEEP_RELEASES:
                keep.add(old.name)
            elif old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        return {"sent": sent, "unchanged": linked, "path": str(current)}

    def run(self, argv: list[str], cwd: str | None = None, env: dict | None = None) -> RunResult:
        cwd = cwd or str(self.path / "current")
        full_env = {**os.environ, **{k: os.path.join(cwd, v) if k == "LD_LIBRARY_PATH" else v for k, v in (env or {}).items()}}
        try:
            r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=full_env)
        except OSError as exc:
            return RunResult(127, "", f"{argv[0]}: {exc.strerror or exc}")
        return RunResult(r.returncode, r.stdout, r.stderr)

    def close(self) -> None:
        pass


RC_MARK = "__toolkit_rc="
COMMAND_TIMEOUT = float(os.environ.get("TOOLKIT_DEVICE_TIMEOUT", "600"))


def q(s: str) -> str:
    return shlex.quote(str(s))


def _parse_free_kb(df_out: str) -> int | None:
    """Available 1K blocks from `df -k`/`df -Pk` output: the third field from the end of the
    data (Available, Use%, Mounted on), which survives GNU df wrapping a long device name."""
    lines = [ln for ln in df_out.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    fields = " ".join(lines[1:]).split()
    try:
        return int(fields[-3])
    except (IndexError, ValueError):
        return None


def _files(bundle: Path) -> list[str]:
    return sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())


class RemoteTransport:
    """What adb and ssh share: the install algorithm, written as device shell commands.

    Subclasses provide `shell(command) -> RunResult` (one string for the device's sh, with the
    device's exit status) and `push_dir(local, remote)` (remote must not exist yet; local's
    contents become remote)."""

    name: str
    kind: str

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        raise NotImplementedError

    def push_dir(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check(self, command: str, what: str) -> RunResult:
        r = self.shell(command)
        if r.returncode != 0:
            detail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [f"exit status {r.returncode}"]
            raise ToolkitError(f"{self.name}: {what} failed: {detail[0]}", hint="check the device is reachable and the install directory is writable")
        return r

    def _df_script(self, root: str) -> str:
        # The install dir may not exist yet: measure the nearest existing parent.
        return f'd={q(root)}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -k "$d"'

    def current_manifest(self, root: str) -> dict | None:
        r = self.shell(f"cat {q(root + '/current/manifest.json')} 2>/dev/null")
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def install(self, bundle: Path, root: str, release: str, reuse: set[str]) -> dict:
        """Push what changed into <root>/.staging-<release>, hard-link (or copy) the unchanged files
        from the current release on the device, rename staging into releases/, swap `current`."""
        releases, final, staging, current = f"{root}/releases", f"{root}/releases/{release}", f"{root}/.staging-{release}", f"{root}/current"
        r = self._check(f"mkdir -p {q(releases)} && rm -rf {q(staging)} && "
                        f"if [ -d {q(final)} ]; then echo present; else echo absent; fi; readlink {q(current)} || true",
                        "preparing the install directory")
        out = r.stdout.split()
        present = bool(out) and out[0] == "present"
        previous = out[1].rsplit("/", 1)[-1] if len(out) > 1 else None
        files = _files(bundle)
        if previous is None:
            reuse = set()
        to_send = [f for f in files if f not in reuse]
        linked = [f for f in files if f in reuse]
        if not present:
            with tempfile.TemporaryDirectory(prefix="toolkit-push-") as tmp:
                payload = Path(tmp) / "payload"
                payload.mkdir()
                for rel in to_send:
                    dst = payload / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(bundle / rel, dst)
                    except OSError:
                        shutil.copy2(bundle / rel, dst)
                if to_send:
                    self.push_dir(payload, staging)
                else:
                    self._check(f"mkdir -p {q(staging)}", "creating the staging directory")
            # Unchanged files: from the release `current` points at, on the device itself.
            cmds, dirs = [], sorted({os.path.dirname(f) for f in linked} - {""})
            if dirs:
                cmds.append("mkdir -p " + " ".join(q(f"{staging}/{d}") for d in dirs))
            for rel in linked:
                src, dst = q(f"{current}/{rel}"), q(f"{staging}/{rel}")
                cmds.append(f"{{ ln {src} {dst} 2>/dev/null || cp -p {src} {dst}; }}")
            for i in range(0, len(cmds), 40):
                self._check(" && ".join(cmds[i:i + 40]), "reusing unchanged files on the device")
            self._verify(bundle, staging, files)
            self._check(f"mv {q(staging)} {q(final)}", "completing the release")
        tmp_link = f"{root}/.current-{release}"
        # Keep the new release and the one it replaces (nothing is pruned when re-installing the current one).
        keep = "|".join(q(x) for x in (release, previous) if x)
        prune = (f' && for d in {q(releases)}/*; do case "${{d##*/}}" in {keep}) ;; *) rm -rf "$d" ;; esac; done'
                 if previous != release else "")
        self._check(f"ln -sfn {q('releases/' + release)} {q(tmp_link)} && "
                    f"{{ mv -fT {q(tmp_link)} {q(current)} 2>/dev/null || {{ rm -f {q(tmp_link)}; ln -sfn {q('releases/' + release)} {q(current)}; }}; }}"
                    + prune, "switching to the new release")
        return {"sent": 0 if present else len(to_send), "unchanged": len(files) if present else len(linked), "path": current}

    def _verify(self, bundle: Path, staging: str, files: list[str]) -> None:
        """Before the switch, every file in staging must have the bundle's sha256 (a push cut short
        or a bad copy is caught here); where the device has no sha256sum, every file must exist."""
        from toolkit.rundir import sha256_file

        r = self.shell(f"cd {q(staging)} && sha256sum -- " + " ".join(q(f) for f in files))
        if r.returncode == 127:
            missing = " ".join(q(f) for f in files)
            self._check(f'cd {q(staging)} && ( for f in {missing}; do [ -f "$f" ] || {{ echo "missing: $f" >&2; exit 1; }}; done )',
                        "checking the staged release")
            return
        got = {ln[66:]: ln[:64] for ln in r.stdout.splitlines() if len(ln) > 66 and ln[64:66] == "  "}
        bad = [f for f in files if got.get(f) != sha256_file(bundle / f)]
        if bad:
            raise ToolkitError(f"{self.name}: {len(bad)} staged file(s) differ from the bundle or are missing, e.g. {bad[0]}",
                               hint="nothing was switched: the device still runs its previous release; re-run the deploy")

    def run(self, argv: list[str], cwd: str | None = None, env: dict | None = None) -> RunResult:
        prefix = f"cd {q(cwd)} && " if cwd else ""
        envs = " ".join(f"{k}={q(v)}" for k, v in (env or {}).items())
        return self.shell(prefix + (f"env {envs} " if envs else "") + " ".join(q(a) for a in argv))


def _tool(name: str, env_var: str) -> str:
    exe = os.environ.get(env_var) or shutil.which(name)
    if not exe:
        raise ToolkitError(f"`{name}` was not found", hint=f"install it (Debian: apt-get install {'adb' if name == 'adb' else 'openssh-client'}) or set {env_var}")
    return exe


class AdbTransport(RemoteTransport):
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


class SshTransport(RemoteTransport):
    """`ssh:user@host[:port]`: the real OpenSSH client. Key authentication only (BatchMode=yes,
    so it never prompts), host keys checked (StrictHostKeyChecking=yes, known_hosts from
    --known-hosts or ~/.ssh/known_hosts), one multiplexed connection (ControlMaster) per deploy.
    Files travel as a tar stream over that connection: names never reach a shell."""

    kind = "ssh"

    def __init__(self, spec: str, identity: str | None = None, known_hosts: str | None = None, accept_new_host_keys: bool = False):
        m = re.fullmatch(r"(?:([^@\s]+)@)?([^\s:@]+|\[[0-9a-fA-F:]+\])(?::(\d+))?", spec)
        if not m:
            raise ToolkitError(f"bad ssh device 'ssh:{spec}'", hint="use ssh:user@host or ssh:user@host:port")
        self.user, self.host, self.port = m.group(1), m.group(2).strip("[]"), m.group(3)
        self.name = f"ssh:{spec}"
        self.ssh = _tool("ssh", "TOOLKIT_SSH")
        identity = identity or os.environ.get("TOOLKIT_SSH_KEY")
        known_hosts = known_hosts or os.environ.get("TOOLKIT_SSH_KNOWN_HOSTS")
        self._ctl = tempfile.mkdtemp(prefix="tk-ssh-")
        self.opts = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={'accept-new' if accept_new_host_keys else 'yes'}",
                     "-o", "ControlMaster=auto", "-o", f"ControlPath={self._ctl}/%C", "-o", "ControlPersist=120",
                     "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15"]
        if known_hosts:
            self.opts += ["-o", f"UserKnownHostsFile={known_hosts}"]
        if identity:
            self.opts += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        if self.port:
            self.opts += ["-p", self.port]
        self.dest = f"{self.user}@{self.host}" if self.user else self.host

    def _ssh(self, command: str, timeout: float | None = None, stdin=None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.ssh, *self.opts, "--", self.dest, command], capture_output=True, text=stdin is None,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL, timeout=timeout or COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ToolkitError(f"{self.name}: ssh timed out", hint="check the host is reachable") from None

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        r = self._ssh(command, timeout)
        if r.returncode == 255:  # ssh's own failure (the remote command's 255 is rare enough)
            msg = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
            raise ToolkitError(f"{self.name}: ssh failed: {msg[-1] if msg else 'exit status 255'}",
                               hint="key authentication only: pass --ssh-key; the host key must be in known_hosts (--known-hosts FILE)")
        return RunResult(r.returncode, r.stdout, r.stderr)

    def push_dir(self, local: Path, remote: str) -> None:
        tar = subprocess.Popen(["tar", "-C", str(local), "-cf", "-", "."], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            r = self._ssh(f"mkdir -p {q(remote)} && tar -C {q(remote)} -xf -", stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
        if r.returncode != 0 or tar.returncode != 0:
            err = r.stderr.decode(errors="replace").strip().splitlines() if isinstance(r.stderr, bytes) else []
            raise ToolkitError(f"{self.name}: push failed: {err[-1] if err else 'exit status %d' % r.returncode}",
                               hint="nothing was switched: the device still runs its previous release; re-run (unchanged files are not sent again)")

    def facts(self, root: str | None = None) -> dict:
        root = root or "/"
        r = self._check(f"uname -m; {self._df_script(root).replace('df -k', 'df -Pk')}", "reading the device's facts")
        lines = r.stdout.splitlines()
        abi = lines[0].strip() if lines else None
        free_kb = _parse_free_kb("\n".join(lines[1:]))
        return {"abi": abi, "abis": [abi] if abi else [], "free_bytes": None if free_kb is None else free_kb * 1024}

    def close(self) -> None:
        subprocess.run([self.ssh, *self.opts, "-O", "exit", "--", self.dest], capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(self._ctl, ignore_errors=True)


def open_transport(spec: str, **ssh_options) -> Transport:
    """`dir:PATH`, `adb:SERIAL` or `ssh:user@host[:port]` (ssh_options: identity, known_hosts, accept_new_host_keys)."""
    kind, _, rest = spec.partition(":")
    if kind == "dir" and rest:
        return DirTransport(rest)
    if kind == "adb" and rest:
        return AdbTransport(rest)
    if kind == "ssh" and rest:
        return SshTransport(rest, **ssh_options)
    raise ToolkitError(f"unsupported device '{spec}'", hint="use --device dir:PATH, adb:SERIAL or ssh:user@host[:port]")


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
