"""`ssh:user@host[:port]`: an ARM Linux board through the real OpenSSH client."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from toolkit.devices.base import COMMAND_TIMEOUT, RunResult, Transport, _parse_free_kb, _tool, q
from toolkit.errors import ToolkitError


class SshTransport(Transport):
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

    def _ssh(self, command: str, timeout: float | None = None, stdin=None, stdout=None) -> subprocess.CompletedProcess:
        """One remote command; text output unless a file/pipe takes stdin or stdout (then bytes)."""
        binary = stdin is not None or stdout is not None
        try:
            return subprocess.run([self.ssh, *self.opts, "--", self.dest, command], text=not binary,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout or COMMAND_TIMEOUT)
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

    def pull_file(self, remote: str, local: Path) -> None:
        with open(local, "wb") as f:
            r = self._ssh(f"cat -- {q(remote)}", stdout=f)
        if r.returncode != 0:
            Path(local).unlink(missing_ok=True)
            raise self._pull_failed(remote, _last_line(r.stderr) or f"exit status {r.returncode}")

    def pull_dir(self, remote: str, local: Path) -> None:
        """A tar stream of remote's contents, unpacked into local (names never reach a shell)."""
        Path(local).mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(local), "-xf", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            r = self._ssh(f"tar -C {q(remote)} -cf - .", stdout=tar.stdin)
        finally:
            tar.stdin.close()
            err = tar.stderr.read().decode(errors="replace")
            tar.wait()
        if r.returncode != 0 or tar.returncode != 0:
            raise self._pull_failed(remote, _last_line(r.stderr) or _last_line(err) or f"exit status {r.returncode}")

    def facts(self, root: str | None = None) -> dict:
        root = root or "/"
        # glibc's version: a runtime needs at least the one it was built against (BUILD-INFO.json device_needs).
        r = self._check(f"uname -m; getconf GNU_LIBC_VERSION 2>/dev/null || echo; {self._df_script(root).replace('df -k', 'df -Pk')}",
                        "reading the device's facts")
        lines = r.stdout.splitlines()
        abi = lines[0].strip() if lines else None
        libc = lines[1].split() if len(lines) > 1 else []
        free_kb = _parse_free_kb("\n".join(lines[2:]))
        return {"abi": abi, "abis": [abi] if abi else [], "free_bytes": None if free_kb is None else free_kb * 1024,
                "glibc": libc[1] if len(libc) == 2 and libc[0] == "glibc" else None}

    def close(self) -> None:
        subprocess.run([self.ssh, *self.opts, "-O", "exit", "--", self.dest], capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(self._ctl, ignore_errors=True)


def _last_line(err) -> str:
    text = err.decode(errors="replace") if isinstance(err, bytes) else (err or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
