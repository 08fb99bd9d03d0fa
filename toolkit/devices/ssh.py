"""`ssh:user@host[:port]`: an ARM Linux board through the real OpenSSH client."""

from __future__ import annotations

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
