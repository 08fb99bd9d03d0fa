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
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


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


class Transport:
    """One device: the install algorithm, written once as device shell commands.

    Each kind provides `shell(command) -> RunResult` (one string for the device's sh, with the
    device's exit status), `push_dir(local, remote)` (remote must not exist yet; local's
    contents become remote), `pull_file(remote, local)`, `pull_dir(remote, local)` (local must
    not exist yet; remote's contents become local) and `facts(root)` (abi or None, abis,
    free_bytes at root)."""

    name: str
    kind: str

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        raise NotImplementedError

    def push_dir(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def pull_file(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def pull_dir(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def facts(self, root: str | None = None) -> dict:
        raise NotImplementedError

    def _pull_failed(self, remote: str, detail: str) -> ToolkitError:
        return ToolkitError(f"{self.name}: cannot pull {remote}: {detail}", hint="check that the path exists on the device and is readable")

    def root(self, target_root: str) -> str:
        """The install root on this device: the target's transport.device_dir."""
        return target_root

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
            try:
                self._stage(bundle, staging, current, to_send, linked)
                self._verify(bundle, staging, files)
            except BaseException:
                self._discard(staging)
                raise
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

    def _stage(self, bundle: Path, staging: str, current: str, to_send: list[str], linked: list[str]) -> None:
        """Assemble the release in `staging`: push what changed, link the rest from `current`."""
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

    def _discard(self, staging: str) -> None:
        """Best effort after a failed install: remove the half-made release (the next install
        removes it anyway; a device that dropped off may not answer now)."""
        try:
            self.shell(f"rm -rf {q(staging)}", timeout=60)
        except Exception:
            pass

    def _verify(self, bundle: Path, staging: str, files: list[str]) -> None:
        """Before the switch, every file in staging must have the bundle's sha256 (a push cut short
        or a bad copy is caught here); where the device has no sha256sum, every file must exist."""
        from toolkit.digest import sha256_file

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

    def run(self, argv: list[str], cwd: str | None = None, env: dict | None = None, timeout: float | None = None) -> RunResult:
        prefix = f"cd {q(cwd)} && " if cwd else ""
        envs = " ".join(f"{k}={q(v)}" for k, v in (env or {}).items())
        return self.shell(prefix + (f"env {envs} " if envs else "") + " ".join(q(a) for a in argv), timeout=timeout)


def _tool(name: str, env_var: str) -> str:
    exe = os.environ.get(env_var) or shutil.which(name)
    if not exe:
        raise ToolkitError(f"`{name}` was not found", hint=f"install it (Debian: apt-get install {'adb' if name == 'adb' else 'openssh-client'}) or set {env_var}")
    return exe
