"""`dir:PATH`: a folder on this machine standing in for a device's install root.

It runs the same install as adb and ssh (toolkit/devices/base.py): the device commands go to
this machine's sh, pushes are local copies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from toolkit.devices.base import COMMAND_TIMEOUT, RunResult, Transport, _parse_free_kb


class DirTransport(Transport):
    kind = "dir"

    def __init__(self, path: str):
        self.path = Path(path).expanduser().resolve()
        self.name = f"dir:{self.path}"

    def root(self, target_root: str) -> str:
        """A folder device ignores the target's device_dir: the folder is the install root."""
        return str(self.path)

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        try:
            r = subprocess.run(["sh", "-c", command], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=timeout or COMMAND_TIMEOUT, errors="replace")
        except subprocess.TimeoutExpired:
            return RunResult(124, "", f"timed out: {command[:80]}")
        return RunResult(r.returncode, r.stdout, r.stderr)

    def push_dir(self, local: Path, remote: str) -> None:
        shutil.copytree(local, remote, copy_function=shutil.copy2)

    def pull_file(self, remote: str, local: Path) -> None:
        try:
            shutil.copy2(remote, local)
        except OSError as exc:
            raise self._pull_failed(remote, exc.strerror or str(exc)) from None

    def pull_dir(self, remote: str, local: Path) -> None:
        try:
            shutil.copytree(remote, local, copy_function=shutil.copy2)
        except OSError as exc:
            raise self._pull_failed(remote, getattr(exc, "strerror", None) or str(exc)) from None

    def facts(self, root: str | None = None) -> dict:
        self.path.mkdir(parents=True, exist_ok=True)
        free_kb = _parse_free_kb(self.shell(self._df_script(str(self.path))).stdout)
        return {"abi": None, "abis": [], "free_bytes": None if free_kb is None else free_kb * 1024}
