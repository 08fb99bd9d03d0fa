"""Stand-in devices for the deploy tests: prerequisites, the arm64 chroot, the stand-in runner,
a private adb server, emulated adb devices and an sshd serving the chroot. All on 127.0.0.1.

Outside CI a missing prerequisite skips the tests with the reason; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = REPO / ".cache" / "devices"
ROOTFS = CACHE / "rootfs-arm64-bookworm"
sys.path.insert(0, str(HERE))

from adb_device import AdbDevice  # noqa: E402

APT_HINT = "apt-get install -y adb qemu-user-static binfmt-support mmdebstrap gcc-aarch64-linux-gnu openssh-client openssh-server"


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


def check_prerequisites(ssh: bool = False) -> None:
    require(os.geteuid() == 0, "the device emulators need root (chroot, mount namespaces)")
    tools = ["adb", "mmdebstrap", "aarch64-linux-gnu-gcc", "unshare", "chroot"] + (["ssh", "ssh-keygen"] if ssh else [])
    missing = [t for t in tools if not shutil.which(t)]
    if ssh and not Path("/usr/sbin/sshd").exists():
        missing.append("sshd")
    require(not missing, f"missing {', '.join(missing)} ({APT_HINT})")
    require(enable_binfmt(), "aarch64 binaries do not run: qemu-user-static + binfmt-support needed, binfmt_misc mounted")


def enable_binfmt() -> bool:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists():
        if not Path("/proc/sys/fs/binfmt_misc/status").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], capture_output=True)
        if shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    return entry.exists() and "enabled" in entry.read_text()


def build_rootfs() -> Path:
    """The arm64 Debian chroot, built once with mmdebstrap and cached in .cache/devices (git-ignored)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ROOTFS / "bin" / "sh").exists():
            tmp = CACHE / "rootfs.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            r = subprocess.run(["mmdebstrap", "--arch=arm64", "--variant=minbase", "bookworm", str(tmp), "http://deb.debian.org/debian"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                pytest.fail(f"mmdebstrap failed:\n{r.stderr[-3000:]}")
            tmp.rename(ROOTFS)
    r = subprocess.run(["chroot", str(ROOTFS), "/bin/true"], capture_output=True, text=True)
    require(r.returncode == 0, f"cannot run the arm64 chroot: {r.stderr.strip()}")
    return ROOTFS


def build_runner(out_dir: Path) -> Path:
    """tests/devices/standin_runner.c, statically linked for aarch64."""
    out = out_dir / "ppocr_runner"
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-s", "-o", str(out), str(HERE / "standin_runner.c")], check=True)
    return out


_next_port = [20000 + random.randrange(0, 8000, 20)]


def device_port() -> int:
    """A port for an emulated device (or the adb server, sshd): below Linux's ephemeral range (32768+) and never reused in a
    session, so a stopped device's port cannot come back as another device's, and no outgoing
    connection's local port can collide with it."""
    while True:
        port = _next_port[0]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def make_bundle(run_root: Path, target: str, runner: Path, files: dict[str, bytes] | None = None, config: dict | None = None,
                runtime: Path | None = None) -> Path:
    """A bundle in the bundle stage's layout and manifest format (models, dict, config.json,
    test image, runtime/bin/ppocr_runner, manifest.json with the sha256 of every file). The
    model files are small stand-in bytes unless `files` gives real ones: their content does not
    matter to the transport, and the stand-in runner only reads them. `runtime`: a built runtime
    folder (bin/, lib/) to carry instead of the stand-in runner."""
    from toolkit.digest import sha256_file

    b = run_root / "bundle" / target
    shutil.rmtree(b, ignore_errors=True)
    content = {"models/det.nb": b"det-v1" * 100, "models/rec.nb": b"rec-v1" * 100, "dict/ppocr_keys_v1.txt": "a\nb\nc\n".encode(),
               "test/image.jpg": b"\xff\xd8\xff\xe0 stand-in image", **(files or {})}
    cfg = config or {"lite_version": "v2.12", "threads": 4, "power_mode": "LITE_POWER_HIGH",
                     "det": {"model": "models/det.nb"}, "rec": {"model": "models/rec.nb", "dict": "dict/ppocr_keys_v1.txt"}}
    for rel, data in content.items():
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(data)
    (b / "config.json").write_text(json.dumps(cfg, indent=2))
    if runtime is not None:
        shutil.copytree(runtime, b / "runtime")
    else:
        (b / "runtime" / "bin").mkdir(parents=True)
        (b / "runtime" / "lib").mkdir()
        shutil.copy2(runner, b / "runtime" / "bin" / "ppocr_runner")
        (b / "runtime" / "lib" / "README.txt").write_text("test-only runtime: the stand-in runner is statically linked\n")
    manifest = {"target": target, "files": {str(p.relative_to(b)): sha256_file(p) for p in sorted(b.rglob("*")) if p.is_file()},
                "runtime": {"included": True, "standin": runtime is None}}
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return b


class AdbServer:
    """A private adb server (own HOME and port), killed at the end."""

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(device_port())}
        self.adb("start-server")

    def adb(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["adb", *args], capture_output=True, text=True, env=self.env, timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"adb {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def connect(self, dev: AdbDevice) -> None:
        self.adb("connect", dev.serial)
        deadline = time.monotonic() + 20
        while (self.adb("-s", dev.serial, "get-state", check=False).stdout.strip() != "device"
               or self.adb("-s", dev.serial, "shell", "getprop ro.product.model", check=False).stdout.strip() != dev.model):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dev.serial} did not come online as {dev.model}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.adb("kill-server", check=False)


class Sshd:
    """The host's OpenSSH server on a loopback port, every session chrooted (ChrootDirectory)
    into the arm64 rootfs, in its own mount namespace where `private` is bound at /opt: the
    board's filesystem as far as the toolkit can tell. Key authentication only; the client
    gets a known_hosts file with the generated host key."""

    def __init__(self, rootfs: Path, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.port = work, device_port()
        self.private = work / "opt"
        self.private.mkdir()
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
        (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
        self.key = work / "client_key"
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} " + (work / "host_key.pub").read_text())
        # sshd refuses a ChrootDirectory with a group/world-writable component (a clone under
        # /tmp): the rootfs is bound, in sshd's own mount namespace, at a root-owned path in /run.
        self.chroot = Path(f"/run/toolkit-test-sshd-{self.port}")
        self.chroot.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.chroot, 0o755)
        cfg = work / "sshd_config"
        cfg.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {work / 'host_key'}
PidFile {work / 'sshd.pid'}
AuthorizedKeysFile {work / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
ChrootDirectory {self.chroot}
Subsystem sftp internal-sftp
StrictModes no
LogLevel ERROR
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        enter = ('mount --bind "$4" "$2" && mount --bind "$1" "$2/opt" && mount -t proc proc "$2/proc"'
                 ' && exec /usr/sbin/sshd -D -e -f "$3"')
        self.log = open(work / "sshd.log", "w")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", enter, "enter",
                                      str(self.private), str(self.chroot), str(cfg), str(rootfs)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(work / 'sshd.log').read_text()}")
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        with contextlib.suppress(OSError):
            self.chroot.rmdir()
