"""A device-side ADB emulator over TCP, for tests: the real `adb` client connects to it
with `adb connect 127.0.0.1:PORT` and cannot tell it from a phone on Wi-Fi debugging
for what the toolkit uses.

What it speaks (the device half of system/core/adb/protocol.txt and SYNC.TXT):
  transport  CNXN (no AUTH: the device accepts the host), OPEN/OKAY/WRTE/CLSE, one
             outstanding WRTE per stream (it waits for the host's OKAY before the next one,
             and OKAYs every host WRTE before replying on that stream)
  shell:     legacy raw shell (no exit code) and shell v2 (`shell,v2,...:`: stdout, stderr
             and exit-code packets); advertised as feature shell_v2
  sync:      v1 STAT/LIST/SEND/RECV/DATA/DONE/QUIT (no stat_v2/ls_v2 advertised)

Commands run inside an arm64 Debian chroot under qemu-user (binfmt), each in a private
mount namespace where the device's own directories are bind-mounted:
  <state>/data        -> /data          (so every emulated device has its own /data/local/tmp)
  <state>/system/bin  -> /system/bin    (getprop answering with the configured ABI list, and
                                         df reporting the configured free space)
The sync service maps device paths the same way on the host side.

Fault injection: `drop_after_push_bytes=N` closes the TCP connection (no CLSE, like a cable
pulled) once N bytes of file data have arrived through sync SEND; it fires once.
`corrupt_next_push=True` flips the first byte of the next file pushed and still reports success.

Run standalone:  python tests/devices/adb_device.py --rootfs DIR --state DIR --port 5599
"""

from __future__ import annotations

import argparse
import os
import posixpath
import socket
import struct
import subprocess
import threading
from pathlib import Path

A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (
    0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257, 0x48545541)
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
FEATURES = "shell_v2,fixed_push_mkdir"
# shell v2 packet ids (system/core/adb/shell_protocol.h)
ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW = range(6)

ENV_PATH = "/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Runs on the host as root: a private mount namespace, the device's dirs bound in, then the chroot.
_ENTER = ('mount --bind "$1" "$3/data" && mount --bind "$2" "$3/system/bin" && '
          '{ mount -t proc proc "$3/proc" 2>/dev/null || true; } && '
          f'exec chroot "$3" /usr/bin/env -i PATH={ENV_PATH} HOME=/data/local/tmp TMPDIR=/data/local/tmp '
          '/bin/sh -c "$4"')


def prepare_rootfs(rootfs: Path) -> None:
    """Mount points the emulator binds onto (idempotent)."""
    for d in ("data", "system/bin", "proc"):
        (Path(rootfs) / d).mkdir(parents=True, exist_ok=True)


class Stream:
    """One ADB stream (a service opened by the host)."""

    def __init__(self, conn: "Connection", local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.closed = False
        self.credit = threading.Event()
        self.credit.set()
        self.write_lock = threading.Lock()

    # host -> device
    def feed(self, data: bytes) -> None:
        with self.cond:
            self.buf += data
            self.cond.notify_all()

    def read_exact(self, n: int) -> bytes:
        with self.cond:
            while len(self.buf) < n:
                if self.closed:
                    raise EOFError
                self.cond.wait(1.0)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out

    # device -> host
    def write(self, data: bytes) -> None:
        with self.write_lock:
            view = memoryview(data)
            step = min(self.conn.max_payload, MAX_PAYLOAD)
            for i in range(0, len(view), step):
                while not self.credit.wait(1.0):
                    if self.closed:
                        raise EOFError
                if self.closed:
                    raise EOFError
                self.credit.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[i:i + step]))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self.cond:
                self.cond.notify_all()
            self.credit.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id, b"")
            self.conn.streams.pop(self.local_id, None)

    def remote_closed(self) -> None:
        self.closed = True
        with self.cond:
            self.cond.notify_all()
        self.credit.set()
        self.conn.streams.pop(self.local_id, None)


class Connection(threading.Thread):
    def __init__(self, device: "AdbDevice", sock: socket.socket):
        super().__init__(daemon=True)
        self.device, self.sock = device, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD
        self.dead = False

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if self.dead:
            raise EOFError
        hdr = struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)
        try:
            with self.send_lock:
                self.sock.sendall(hdr + data)
        except OSError:
            self.drop()
            raise EOFError from None

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return bytes(out)

    def drop(self) -> None:
        """Close the TCP connection without a goodbye, as a pulled cable would."""
        if self.dead:
            return
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for s in list(self.streams.values()):
            s.remote_closed()

    def run(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, _crc, magic = struct.unpack("<6I", self._recv_exact(24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise EOFError
                data = self._recv_exact(length) if length else b""
                self.dispatch(cmd, arg0, arg1, data)
        except (EOFError, OSError):
            pass
        finally:
            self.drop()

    def dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        dev = self.device
        if cmd == A_CNXN:
            self.max_payload = min(arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
            banner = (f"device::ro.product.name={dev.product};ro.product.model={dev.model};"
                      f"ro.product.device={dev.product};features={FEATURES}").encode()
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, banner)
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            local_id = self.next_id
            self.next_id += 1
            handler = dev.service_handler(service)
            if handler is None:
                self.send(A_CLSE, 0, arg0, b"")
                return
            s = Stream(self, local_id, arg0)
            self.streams[local_id] = s
            self.send(A_OKAY, local_id, arg0, b"")
            threading.Thread(target=self._serve, args=(handler, s), daemon=True).start()
        elif cmd == A_OKAY:
            s = self.streams.get(arg1)
            if s is not None:
                s.credit.set()
        elif cmd == A_WRTE:
            s = self.streams.get(arg1)
            if s is None:
                self.send(A_CLSE, 0, arg0, b"")
                return
            self.send(A_OKAY, s.local_id, s.remote_id, b"")  # acknowledge before anything is replied
            s.feed(data)
        elif cmd == A_CLSE:
            s = self.streams.get(arg1)
            if s is not None:
                s.remote_closed()

    def _serve(self, handler, s: Stream) -> None:
        try:
            handler(s)
        except EOFError:
            pass
        finally:
            try:
                s.close()
            except EOFError:
                pass


class AdbDevice:
    """One emulated device listening on 127.0.0.1:port."""

    def __init__(self, rootfs: Path, state: Path, port: int = 0, abi: str = "arm64-v8a",
                 abilist: list[str] | None = None, free_kb: int = 8 * 1024 * 1024, model: str = "toolkit_emu",
                 drop_after_push_bytes: int | None = None):
        self.rootfs, self.state = Path(rootfs), Path(state)
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.serial = f"127.0.0.1:{self.port}"
        # The model names the port, so a test can tell which emulated device answered.
        self.model = self.product = f"{model}_{self.port}"
        self.data_dir = self.state / "data"
        self.sysbin = self.state / "system" / "bin"
        (self.data_dir / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        self.sysbin.mkdir(parents=True, exist_ok=True)
        prepare_rootfs(self.rootfs)
        self.drop_after_push_bytes = drop_after_push_bytes
        self.corrupt_next_push = False
        self.push_bytes = 0
        self.drops = 0
        self.configure(abi=abi, abilist=abilist, free_kb=free_kb)
        self.connections: list[Connection] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def configure(self, abi: str | None = None, abilist: list[str] | None = None, free_kb: int | None = None) -> None:
        """(Re)write getprop and df for this device."""
        if abi is not None:
            self.abi = abi
            self.abilist = abilist or [abi]
        if free_kb is not None:
            self.free_kb = free_kb
        props = {"ro.product.cpu.abi": self.abi, "ro.product.cpu.abilist": ",".join(self.abilist),
                 "ro.product.cpu.abilist64": ",".join(a for a in self.abilist if "64" in a),
                 "ro.product.cpu.abilist32": ",".join(a for a in self.abilist if "64" not in a),
                 "ro.product.model": self.model, "ro.build.version.sdk": "30"}
        cases = "".join(f"  {k}) echo '{v}';;\n" for k, v in props.items())
        listing = "".join(f"echo '[{k}]: [{v}]'\n" for k, v in props.items())
        self._script("getprop", f'#!/bin/sh\ncase "$1" in\n{cases}  "") {listing.replace(chr(10), "; ")};;\n  *) echo;;\nesac\n')
        total = max(self.free_kb * 2, 1024)
        self._script("df", "#!/bin/sh\n# Emulated: reports the configured free space for any path.\n"
                           "echo 'Filesystem      1K-blocks    Used Available Use% Mounted on'\n"
                           f"echo '/dev/block/dm-5 {total} {total - self.free_kb} {self.free_kb} 50% /data'\n")

    def _script(self, name: str, text: str) -> None:
        p = self.sysbin / name
        p.write_text(text)
        p.chmod(0o755)

    # lifecycle
    def start(self) -> "AdbDevice":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        try:  # shutdown first: a bare close() leaves the blocked accept() taking one more connection
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        for c in self.connections:
            c.drop()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Connection(self, sock)
            self.connections.append(c)
            c.start()

    # services
    def service_handler(self, service: str):
        if service.startswith("shell"):
            head, _, command = service.partition(":")
            opts = head.split(",")[1:]
            return lambda s: self._shell(s, command, "v2" in opts)
        if service == "sync:":
            return self._sync
        return None

    def popen(self, command: str) -> subprocess.Popen:
        argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _ENTER, "enter",
                str(self.data_dir), str(self.sysbin), str(self.rootfs), command]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _shell(self, s: Stream, command: str, v2: bool) -> None:
        if not command:
            s.write(b"interactive shell is not emulated\n")
            return
        proc = self.popen(command)
        lock = threading.Lock()

        def pump(pipe, ident):
            try:
                for chunk in iter(lambda: pipe.read1(SYNC_DATA_MAX), b""):
                    with lock:
                        s.write(struct.pack("<BI", ident, len(chunk)) + chunk if v2 else chunk)
            except EOFError:  # the host went away; let the command finish on its own
                pipe.read()

        threads = [threading.Thread(target=pump, args=(proc.stdout, ID_STDOUT), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, ID_STDERR), daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rc = proc.wait()
        if v2:
            code = rc if rc >= 0 else 128 - rc
            s.write(struct.pack("<BI", ID_EXIT, 1) + bytes([code & 0xFF]))

    def host_path(self, device_path: str) -> Path:
        p = posixpath.normpath("/" + device_path.lstrip("/"))
        for mount, host in (("/data", self.data_dir), ("/system/bin", self.sysbin)):
            if p == mount or p.startswith(mount + "/"):
                return host / p[len(mount) + 1:]
        return self.rootfs / p.lstrip("/")

    def _sync(self, s: Stream) -> None:
        def reply(ident: bytes, *ints: int, data: bytes = b"") -> None:
            s.write(ident + struct.pack(f"<{len(ints)}I", *ints) + data)

        def fail(msg: str) -> None:
            m = msg.encode()
            reply(b"FAIL", len(m), data=m)

        while True:
            ident, length = struct.unpack("<4sI", s.read_exact(8))
            if ident == b"QUIT":
                return
            path = s.read_exact(length).decode("utf-8", "surrogateescape")
            if ident == b"STAT":
                try:
                    st = os.stat(self.host_path(path))
                    reply(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
                except OSError:
                    reply(b"STAT", 0, 0, 0)
            elif ident == b"LIST":
                d = self.host_path(path)
                try:
                    entries = [(e.name, e.stat(follow_symlinks=False)) for e in os.scandir(d)]
                except OSError:
                    entries = []
                if os.path.isdir(d):
                    entries = [(".", os.stat(d)), ("..", os.stat(d))] + entries
                for name, st in entries:
                    n = name.encode("utf-8", "surrogateescape")
                    reply(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(n), data=n)
                reply(b"DONE", 0, 0, 0, 0)
            elif ident == b"SEND":
                remote, _, mode = path.rpartition(",")
                self._recv_file(s, remote, int(mode or "0644") & 0o7777 or 0o644, fail, reply)
            elif ident == b"RECV":
                try:
                    with open(self.host_path(path), "rb") as f:
                        while chunk := f.read(SYNC_DATA_MAX):
                            reply(b"DATA", len(chunk), data=chunk)
                    reply(b"DONE", 0)
                except OSError as e:
                    fail(f"remote object '{path}' does not exist" if isinstance(e, FileNotFoundError) else str(e))
            else:
                fail(f"unknown sync request {ident!r}")
                return

    def _recv_file(self, s: Stream, remote: str, mode: int, fail, reply) -> None:
        dst = self.host_path(remote)
        err = None
        f = None
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            f = open(dst, "wb")
        except OSError as e:
            err = f"couldn't create file: {e.strerror}"
        while True:
            ident, n = struct.unpack("<4sI", s.read_exact(8))
            if ident == b"DONE":  # n is the mtime
                break
            if ident != b"DATA":
                err = err or f"unexpected {ident!r} in SEND"
                break
            data = s.read_exact(n)
            self.push_bytes += n
            if self.corrupt_next_push and data:
                self.corrupt_next_push = False
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if f is not None and err is None:
                f.write(data)
            limit = self.drop_after_push_bytes
            if limit is not None and self.push_bytes >= limit:
                self.drop_after_push_bytes = None  # fires once
                self.drops += 1
                if f is not None:
                    f.close()
                s.conn.drop()
                raise EOFError
        if f is not None:
            f.close()
        if err is None:
            os.chmod(dst, mode)
            os.utime(dst, (n, n))
            reply(b"OKAY", 0)
        else:
            if f is not None:
                dst.unlink(missing_ok=True)
            fail(err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rootfs", required=True, type=Path)
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--port", type=int, default=5599)
    ap.add_argument("--abi", default="arm64-v8a")
    ap.add_argument("--abilist", default=None, help="comma-separated; default: the --abi")
    ap.add_argument("--free-kb", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--drop-after-push-bytes", type=int, default=None)
    a = ap.parse_args()
    dev = AdbDevice(a.rootfs, a.state, a.port, a.abi, a.abilist.split(",") if a.abilist else None, a.free_kb,
                    drop_after_push_bytes=a.drop_after_push_bytes).start()
    print(f"listening on {dev.serial}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        dev.stop()


if __name__ == "__main__":
    main()
