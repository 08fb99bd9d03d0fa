"""Devices are transports: `dir:PATH` here; adb and ssh speak the same small interface.

Install layout on a device (the same for every transport):
  <root>/releases/<bundle-id>/   one complete bundle per release
  <root>/current -> releases/<bundle-id>   switched in one atomic rename
so a deploy that fails half-way leaves `current` pointing at the previous, complete bundle.
"""

from __future__ import annotations

import os
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

    def facts(self) -> dict: ...                                   # abi (or None), free_bytes
    def current_manifest(self, root: str) -> dict | None: ...
    def install(self, bundle: Path, root: str, release: str, reuse: set[str]) -> dict: ...
    def run(self, argv: list[str], cwd: str | None = None) -> RunResult: ...


class DirTransport:
    """A folder on this machine standing in for a device's install root."""

    def __init__(self, path: str):
        self.path = Path(path).expanduser().resolve()
        self.name = f"dir:{self.path}"

    def facts(self) -> dict:
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

    def run(self, argv: list[str], cwd: str | None = None) -> RunResult:
        r = subprocess.run(argv, cwd=cwd or str(self.path / "current"), capture_output=True, text=True)
        return RunResult(r.returncode, r.stdout, r.stderr)


def open_transport(spec: str) -> Transport:
    """`dir:PATH` (adb:SERIAL and ssh:user@host come with the device-deploy work)."""
    kind, _, rest = spec.partition(":")
    if kind == "dir" and rest:
        return DirTransport(rest)
    raise ToolkitError(f"unsupported device '{spec}'", hint="use --device dir:PATH (adb and ssh transports are not built yet)")
