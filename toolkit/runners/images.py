"""Docker images: the trainer, the converter (one per Paddle Lite version) and the runtime (one per target).

An image is an ImageSpec: a Dockerfile from docker/, build args, and the files its build
context needs. Its tag is a hash of those inputs (Dockerfile text, build args, context file
digests, the base image's id), so `toolkit images build` skips an image whose tag already
exists ("up to date, no build") and rebuilds exactly when an input changed.

Without --base-image the base is made here, since no registry may be reachable: a Debian
bookworm rootfs from `debootstrap --variant=minbase` (cached as a tarball under
TOOLKIT_HOME/images/), imported with `docker import`. Wheels can be pre-downloaded on the host
(`pip download`, through whatever index and local wheel folders the host's pip is configured
with, which containers do not see) into the build context; a user with internet can also
build from a plain pip index (--no-wheelhouse, --pip-index-url).

The runtime image builds Paddle Lite from the commit targets/<T>.yaml pins (from --lite-source
DIR, a local clone, else the repository URL), OpenCV and Clipper from pinned source archives,
and the runner (docker/runtime.Dockerfile). Everything it downloads is fetched here, checked
against the target file's sha256 (or, for an unpinned release archive, recorded in
TOOLKIT_HOME/runtime/downloads.lock on first use and checked after), cached under
TOOLKIT_HOME/downloads and handed to the build in its context; the image checks each again.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.runners.envs import find_python, toolkit_home
from toolkit.digest import hash_json, sha256_bytes, sha256_file
from toolkit.errors import ToolkitError
from toolkit.share import docker_dir
from toolkit.targets import Target

DOCKER_DIR = docker_dir()
BASE_NAME = "toolkit-base:bookworm-minbase"
TRAINER = "toolkit-trainer"
CONVERTER = "toolkit-converter"
KINDS = ("trainer", "converter", "runtime")
LABEL = "org.toolkit.inputs"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PADDLE = {"cpu": "paddlepaddle==2.6.2", "gpu": "paddlepaddle-gpu==2.6.2"}
# Versions inside the trainer image (Debian bookworm's python3).
TRAINER_PY = "3.11"
LOG_TAIL = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

Log = Callable[[str], None]


# ------------------------------------------------------------------ engine
def engine(timeout: int = 600):
    """A Docker SDK client that has answered a ping, or a clear error."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ToolkitError("the Docker SDK for Python is not installed", hint="pip install 'docker>=7,<8'") from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise ToolkitError(f"no Docker engine is reachable at {where} ({reason})",
                           hint="start the engine (`sudo systemctl start docker`, or `dockerd &` as root; Debian: apt-get install docker.io), "
                                "or set DOCKER_HOST; the stages themselves run without Docker (`--runner local`)") from None


def engine_answers() -> bool:
    try:
        engine(timeout=5)
        return True
    except ToolkitError:
        return False


def image_exists(client, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


# ------------------------------------------------------------------ specs
@dataclass
class ContextFile:
    """A file of the build context: `digest` goes into the tag; `write` makes it only when building."""

    name: str
    digest: str
    write: Callable[[Path], None]
    resolve: Callable[[Log], str] | None = None  # run before the tag is computed; returns the digest


@dataclass
class ImageSpec:
    kind: str                       # trainer | converter | runtime
    repo: str                       # image name, e.g. toolkit-trainer
    variant: str                    # cpu | gpu | v2.12 | <target>
    dockerfile: Path
    build_args: dict[str, str]
    files: list[ContextFile] = field(default_factory=list)
    wheels: Callable[[Path, Log], bool] | None = None  # fills wheels/; False: fall back to the pip index
    base_id: str = ""

    def prepare(self, log: Log) -> None:
        """Settle every digest that needs work first (a checkout checked, an unpinned download recorded)."""
        for f in self.files:
            if f.resolve is not None:
                f.digest = f.resolve(log)
                f.resolve = None

    def inputs(self) -> dict:
        return {"dockerfile": sha256_file(self.dockerfile), "args": self.build_args,
                "files": {f.name: f.digest for f in self.files}, "base": self.base_id}

    @property
    def digest(self) -> str:
        return hash_json(self.inputs())[:12]

    @property
    def tag(self) -> str:
        return f"{self.repo}:{self.variant}-{self.digest}"

    @property
    def alias(self) -> str:
        """A stable name for the newest build of this variant (what `docker images` shows)."""
        return f"{self.repo}:{self.variant}"


@dataclass
class BuildOptions:
    base_image: str | None = None          # None: make one with debootstrap
    pip_index_url: str = "https://pypi.org/simple"
    pip_extra_index_url: str = ""
    wheelhouse: bool = True                # pre-download wheels on the host
    ca_certs: list[Path] = field(default_factory=list)
    apt_mirror: str = DEBIAN_MIRROR
    python37_sha256: str | None = None     # converter from source (no local Python 3.7)
    runtime_sha256: dict[str, str] = field(default_factory=dict)   # target -> sha256 of its Lite release archive (kind archive)
    ndk_sha256: str | None = None          # overrides the target's toolchain.sha256
    lite_source: Path | None = None        # a local Paddle Lite git checkout or bare repository; None: the image clones the URL
    force: bool = False


def pin_runtime(item: str) -> tuple[str, str]:
    """--runtime-sha256 TARGET=SHA256 as (target, sha256)."""
    name, sep, sha = item.partition("=")
    if not sep or len(sha) != 64:
        raise ToolkitError(f"--runtime-sha256 {item}: expected TARGET=SHA256 (64 hex characters)")
    return name, sha.lower()


def _file(name: str, src: Path) -> ContextFile:
    return ContextFile(name, sha256_bytes(src.read_bytes()), lambda d, s=src: shutil.copy2(s, d / name))


def _bytes(name: str, data: bytes) -> ContextFile:
    def write(d: Path) -> None:
        (d / name).write_bytes(data)

    return ContextFile(name, sha256_bytes(data), write)


def _ca_file(opts: BuildOptions) -> ContextFile:
    data = b""
    for p in opts.ca_certs:
        p = Path(p)
        if not p.is_file():
            raise ToolkitError(f"--ca-cert {p}: no such file", hint="give a PEM file of CA certificates (e.g. your proxy's root CA)")
        data += p.read_bytes().rstrip() + b"\n"
    return _bytes("extra-ca.crt", data)


def _common_args(opts: BuildOptions) -> dict[str, str]:
    return {"PIP_INDEX_URL": opts.pip_index_url, "PIP_EXTRA_INDEX_URL": opts.pip_extra_index_url,
            "PIP_NO_INDEX": "1" if opts.wheelhouse else "0", "APT_MIRROR": opts.apt_mirror}


def _pip_download(reqs: list[str], py: str, abi: str, no_deps: bool) -> Callable[[Path, Log], bool]:
    """pip download on the host for the image's Python (binary wheels only)."""

    def fill(dest: Path, log: Log) -> bool:
        cache = toolkit_home() / "images" / "wheels" / f"cp{py.replace('.', '')}"
        cache.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", py,
                "--implementation", "cp", "--abi", abi, "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux1_x86_64", "--platform", "linux_x86_64", "-d", str(cache)]
        argv += (["--no-deps"] if no_deps else []) + reqs
        log(f"  pre-downloading {len(reqs)} requirement(s) for Python {py} into {cache}")
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            log("  pip download failed; the image's pip will use the index instead: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200])
            return False
        for w in cache.iterdir():
            target = dest / w.name
            try:
                os.link(w, target)
            except OSError:
                shutil.copy2(w, target)
        return True

    return fill


def _req_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def trainer_spec(opts: BuildOptions, variant: str = "cpu") -> ImageSpec:
    if variant not in PADDLE:
        raise ToolkitError(f"trainer variant {variant!r}: expected cpu or gpu")
    req = DOCKER_DIR / "trainer-requirements.txt"
    # The GPU build pulls the CUDA runtime wheels (nvidia-*, gigabytes) from the index: no wheelhouse.
    wheelhouse = opts.wheelhouse and variant == "cpu"
    args = {**_common_args(opts), "PADDLE_PACKAGE": PADDLE[variant], "PIP_NO_INDEX": "1" if wheelhouse else "0"}
    extra = ["rapidocr-paddle==1.4.5", "unstructured-paddleocr==2.10.0"]
    return ImageSpec("trainer", TRAINER, variant, DOCKER_DIR / "trainer.Dockerfile", args,
                     [_file("trainer-requirements.txt", req), _ca_file(opts)],
                     _pip_download(_req_lines(req) + [PADDLE[variant]] + extra, TRAINER_PY, "cp311", no_deps=True) if wheelhouse else None)


def _python_tree(version: str) -> Path | None:
    """The install prefix of a local CPython of `version` (e.g. pyenv's), if there is one."""
    exe = find_python(version)
    if exe is None:
        return None
    r = subprocess.run([str(exe), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True)
    return Path(r.stdout.strip()) if r.returncode == 0 else None


def _pack_python(prefix: Path) -> Callable[[Path], None]:
    skip = {"test", "idlelib", "tkinter", "turtledemo", "__pycache__", "lib2to3"}

    def keep(ti: tarfile.TarInfo):
        parts = Path(ti.name).parts
        if any(p in skip for p in parts) or ti.name.endswith(".pth") and "site-packages" in parts:
            return None  # tests, GUI bits, and .pth hooks of this host's site-packages
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def write(d: Path) -> None:
        with tarfile.open(d / "python.tar.gz", "w:gz", compresslevel=1) as tf:
            for sub in ("bin", "include", "lib"):
                if (prefix / sub).exists():
                    tf.add(prefix / sub, arcname=sub, filter=keep)

    return write


# docker/converter.Dockerfile installs CPython 3.7 (the only Python the paddlelite 2.12 wheel exists for).
CONVERTER_PYTHON = "3.7"


def converter_spec(opts: BuildOptions, target: Target) -> ImageSpec:
    lite = target.lite
    args = {**_common_args(opts), "LITE_PACKAGE": lite.python_wheel, "NUMPY_PACKAGE": lite.numpy}
    files = [_ca_file(opts)]
    if lite.python != CONVERTER_PYTHON:
        raise ToolkitError(f"targets/{target.name}.yaml: the converter image is made for Python {CONVERTER_PYTHON} (Paddle Lite 2.12), not {lite.python}",
                           hint="add a converter Dockerfile for that Python, or use --runner local")
    prefix = _python_tree(lite.python)
    if prefix is not None:
        exe = prefix / "bin" / f"python{lite.python}"
        lib = next(iter(sorted((prefix / "lib").glob(f"libpython{lite.python}*.so*"))), None)
        ident = sha256_bytes(exe.read_bytes() + (lib.read_bytes() if lib else b""))
        args.update(PYTHON_FROM="prebuilt")
        files.append(ContextFile("python.tar.gz", ident, _pack_python(prefix)))
    elif opts.python37_sha256:
        args.update(PYTHON_FROM="source", PYTHON_SHA256=opts.python37_sha256)
        files.append(_bytes("python.tar.gz", b""))
    else:
        raise ToolkitError(f"the converter image needs CPython {lite.python} (paddlelite 2.12 is a cp37-only wheel): no local Python {lite.python} to pack, "
                           "and no checksum to build one from python.org's source",
                           hint="install one (`pyenv install 3.7.17`), or pass --python37-sha256 SHA "
                                "(the sha256 of Python-3.7.17.tgz, published on python.org) to compile it in the image")
    abi = "cp37m" if lite.python == "3.7" else "cp" + lite.python.replace(".", "")
    return ImageSpec("converter", CONVERTER, lite.version, DOCKER_DIR / "converter.Dockerfile", args, files,
                     _pip_download([lite.python_wheel, lite.numpy], lite.python, abi, no_deps=False) if opts.wheelhouse else None)


# ------------------------------------------------------------------ runtime: pinned downloads and the Lite source
def lock_path() -> Path:
    """Where the sha256 of downloads the targets do not pin is recorded on first use (trust on first use)."""
    return toolkit_home() / "runtime" / "downloads.lock"


def _read_lock() -> dict[str, str]:
    try:
        return json.loads(lock_path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ToolkitError(f"{lock_path()} is not valid JSON", hint="fix or delete it (deleting it re-records every unpinned download)") from None


def fetch(url: str, sha256: str | None, what: str, log: Log = print) -> tuple[Path, str]:
    """A checked local copy of `url` (cached under TOOLKIT_HOME/downloads) and its sha256.

    A pinned sha256 must match. An unpinned one is recorded in the lock file the first time
    (with a notice) and must match it every time after: a file that changes under the same URL
    is refused, never used."""
    lock = _read_lock()
    expected = sha256 or lock.get(url)
    name = url.rsplit("/", 1)[-1].split("?")[0] or "download"
    cache = toolkit_home() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    path = cache / name
    if expected and path.exists() and sha256_file(path) == expected:
        return path, expected
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    log(f"  downloading {what}: {url}")
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ToolkitError(f"cannot download {what} from {url}: {str(exc)[:200]}",
                           hint="check the network (a proxy: HTTPS_PROXY; its CA: SSL_CERT_FILE), or put the file at " + str(path)) from None
    got = sha256_file(tmp)
    if expected and got != expected:
        tmp.unlink()
        source = "pinned in the target file" if sha256 else f"recorded in {lock_path()} on its first download"
        raise ToolkitError(f"{what}: {url} has sha256 {got}, expected {expected} ({source})",
                           hint="the file changed or the download was tampered with; check it before changing the pin"
                                + ("" if sha256 else f" (delete its line in {lock_path()} to record the new one)"))
    tmp.replace(path)
    if not expected:
        lock[url] = got
        lock_path().parent.mkdir(parents=True, exist_ok=True)
        atomic = lock_path().with_suffix(".tmp")
        atomic.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
        atomic.replace(lock_path())
        log(f"NOTICE: {what} is not pinned: recorded sha256 {got} of {url} in {lock_path()}; "
            "later builds refuse a different file. Check it and pin it in the target file.")
    return path, got


def _download(name: str, url: str, sha256: str | None, what: str) -> ContextFile:
    """A context folder `name`/ holding one checked download. Pinned: fetched (or found in the
    cache) only when the image is built; unpinned: settled in prepare(), its sha256 being an input."""
    state: dict = {"sha": sha256 or _read_lock().get(url), "log": lambda m: None}

    def resolve(log: Log) -> str:
        state["log"] = log
        if not state["sha"]:
            state["sha"] = fetch(url, None, what, log)[1]
        return f"{url} {state['sha']}"

    def write(d: Path) -> None:
        src, _ = fetch(url, state["sha"], what, state["log"])
        (d / name).mkdir(exist_ok=True)
        _link_or_copy(str(src), str(d / name / {"ndk": "ndk.zip", "lite-archive": "lite.tgz"}.get(name, "src.archive")))

    return ContextFile(name, f"{url} {state['sha']}", write, resolve)


def _empty(name: str) -> ContextFile:
    return ContextFile(name, "", lambda d: (d / name).mkdir(exist_ok=True))


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def lite_checkout(src: Path, target: Target, log: Log = print) -> Path:
    """A shallow clone of the target's pinned Paddle Lite tag taken from `src` (a checkout or a bare
    repository), cached per commit; a tag that is not the pinned commit is refused."""
    pin = target.runtime.source
    src = Path(src).expanduser()
    if not src.exists():
        raise ToolkitError(f"--lite-source {src}: no such directory", hint="give a Paddle Lite git checkout or bare repository")
    if not shutil.which("git"):
        raise ToolkitError("--lite-source needs git on this machine", hint="apt-get install git")
    r = _git("rev-parse", "--verify", "--quiet", f"refs/tags/{pin.tag}^{{commit}}", cwd=src)
    if r.returncode != 0:
        if _git("rev-parse", "--git-dir", cwd=src).returncode != 0:
            raise ToolkitError(f"--lite-source {src}: not a git repository", hint="give a clone of " + pin.repository + " (a bare one is fine)")
        raise ToolkitError(f"--lite-source {src}: has no tag {pin.tag}", hint=f"fetch the tags (`git -C {src} fetch --tags`), or give another clone")
    actual = r.stdout.strip()
    if actual != pin.commit:
        raise ToolkitError(f"--lite-source {src}: tag {pin.tag} is commit {actual}, but targets/{target.name}.yaml pins {pin.commit}",
                           hint="the tag was moved or this is not the official repository: check it; building from another commit is refused")
    dest = toolkit_home() / "images" / "lite-src" / pin.commit
    if not (dest / ".git").is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"  Paddle Lite {pin.tag}: shallow clone from {src}")
        r = _git("clone", "-q", "--depth", "1", "--branch", pin.tag, f"file://{src.resolve()}", str(tmp))
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ToolkitError(f"--lite-source {src}: git clone of {pin.tag} failed", hint=(r.stderr.strip().splitlines() or ["?"])[-1][:300])
        _git("remote", "set-url", "origin", pin.repository, cwd=tmp)  # no local path inside the image
        if _git("rev-parse", "HEAD", cwd=tmp).stdout.strip() != pin.commit:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ToolkitError(f"--lite-source {src}: the clone of {pin.tag} is not at {pin.commit}", hint="check the repository")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


def _lite_source(opts: BuildOptions, target: Target) -> ContextFile:
    """lite-src/: the checked clone (its digest is the pinned commit), or empty (the image clones the URL)."""
    if opts.lite_source is None:
        return _empty("lite-src")
    state: dict = {}

    def resolve(log: Log) -> str:
        state["dir"] = lite_checkout(opts.lite_source, target, log)
        return f"git {target.runtime.source.commit}"

    def write(d: Path) -> None:
        shutil.copytree(state["dir"], d / "lite-src", symlinks=True, copy_function=_link_or_copy)

    return ContextFile("lite-src", "", write, resolve)


def _link_or_copy(src: str, dst: str) -> None:
    # Hard links keep the build context cheap; copy2 where links are impossible.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_info(target: Target, opts: BuildOptions) -> dict:
    """What BUILD-INFO.json records about the inputs (the image adds compiler versions and files)."""
    rt = target.runtime
    info: dict = {"target": target.name, "os": target.os, "arch": target.arch, "abi": target.abi, "lite_version": target.lite.version,
                  "toolchain": rt.toolchain.model_dump(exclude_none=True),
                  "opencv": {"source": rt.opencv.url, "sha256": rt.opencv.sha256, "modules": ["core", "imgproc"], "static": True},
                  "clipper": {"source": rt.clipper.url, "sha256": rt.clipper.sha256}}
    if rt.kind == "source":
        info["lite"] = {"kind": "source", "repository": rt.source.repository, "tag": rt.source.tag, "commit": rt.source.commit,
                        "cmake_options": dict(rt.cmake_options),
                        "checkout": "--lite-source (local clone of the tag)" if opts.lite_source else "cloned from the repository"}
    else:
        info["lite"] = {"kind": "archive", "url": rt.archive.url, "lib_path": rt.archive.lib_path}
    return info


def runtime_spec(opts: BuildOptions, target: Target) -> ImageSpec:
    rt = target.runtime
    tc = rt.toolchain
    args = {"APT_MIRROR": opts.apt_mirror, "TOOLCHAIN": tc.kind, "LITE_KIND": rt.kind, "TARGET_ABI": target.abi,
            "OPENCV_SHA256": rt.opencv.sha256, "OPENCV_SUBDIR": rt.opencv.subdir,
            "CLIPPER_SHA256": rt.clipper.sha256, "CLIPPER_SUBDIR": rt.clipper.subdir}
    files = [_ca_file(opts)] + [_file(f"runtime/{p.name}", p) for p in sorted((DOCKER_DIR / "runtime").iterdir()) if p.is_file()]
    files += [_download("opencv", rt.opencv.url, rt.opencv.sha256, "OpenCV source"),
              _download("clipper", rt.clipper.url, rt.clipper.sha256, "Clipper source")]
    if rt.kind == "source":
        args.update(LITE_REPOSITORY=rt.source.repository, LITE_TAG=rt.source.tag, LITE_COMMIT=rt.source.commit,
                    LITE_CMAKE_OPTIONS=" ".join(f"-D{k}={v}" for k, v in rt.cmake_options.items()))
        files += [_lite_source(opts, target), _empty("lite-archive")]
    else:
        sha = opts.runtime_sha256.get(target.name) or rt.archive.sha256
        dl = _download("lite-archive", rt.archive.url, sha, f"the Paddle Lite release archive for {target.name}")
        args.update(LITE_LIB_PATH=rt.archive.lib_path, LITE_ARCHIVE_SHA256=sha or _read_lock().get(rt.archive.url) or "")
        first = dl.resolve

        def resolve(log: Log, first=first) -> str:  # the Dockerfile checks the archive again: the sha256 is an argument too
            digest = first(log)
            args["LITE_ARCHIVE_SHA256"] = digest.rsplit(" ", 1)[1]
            return digest

        dl.resolve = resolve
        files += [_empty("lite-src"), dl]
    if tc.kind == "ndk":
        sha = opts.ndk_sha256 or tc.sha256
        args.update(NDK_VERSION=tc.ndk_version, NDK_SHA256=sha, ANDROID_API=str(tc.api_level))
        files.append(_download("ndk", tc.url, sha, f"the Android NDK {tc.ndk_version}"))
    else:
        args.update(GCC_TRIPLE=tc.triple)
        files.append(_empty("ndk"))
    spec = ImageSpec("runtime", target.images.runtime, target.lite.version, DOCKER_DIR / "runtime.Dockerfile", args, files)
    spec.build_args["BUILD_INFO"] = json.dumps(build_info(target, opts), sort_keys=True)
    return spec


# ------------------------------------------------------------------ base image
def ensure_base(client, opts: BuildOptions, log: Log) -> str:
    """The base image's id: --base-image as given (must exist locally), else one made with debootstrap."""
    import docker

    if opts.base_image:
        try:
            return client.images.get(opts.base_image).id
        except docker.errors.ImageNotFound:
            raise ToolkitError(f"base image {opts.base_image} is not in the local engine",
                               hint=f"`docker pull {opts.base_image}` (or load it), or leave out --base-image to make one with debootstrap") from None
    try:
        img = client.images.get(BASE_NAME)
        log(f"base image {BASE_NAME}: present")
        return img.id
    except docker.errors.ImageNotFound:
        pass
    tarball = toolkit_home() / "images" / "rootfs-bookworm-minbase.tar"
    if not tarball.exists():
        if not shutil.which("debootstrap"):
            raise ToolkitError("no base image, and debootstrap is not installed to make one",
                               hint="apt-get install debootstrap (as root), or pass --base-image debian:bookworm-slim after pulling it")
        if os.geteuid() != 0:
            raise ToolkitError("making the base image with debootstrap needs root",
                               hint="run `toolkit images build` once as root, or pass --base-image with a Debian bookworm image you have")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
        log(f"base image: debootstrap --variant=minbase bookworm ({opts.apt_mirror}), about 2 minutes")
        t0 = time.monotonic()
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), opts.apt_mirror], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-LOG_TAIL:])
            raise ToolkitError("debootstrap failed to make the base image", hint=tail[-1200:])
        for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp), "."], check=True)
        tmp.replace(tarball)
        shutil.rmtree(root, ignore_errors=True)
        log(f"base image: rootfs in {time.monotonic() - t0:.0f}s, cached as {tarball}")
    repo, tag = BASE_NAME.split(":")
    client.api.import_image(src=str(tarball), repository=repo, tag=tag)
    log(f"base image {BASE_NAME}: imported from {tarball}")
    return client.images.get(BASE_NAME).id


# ------------------------------------------------------------------ build
def build(client, spec: ImageSpec, base_ref: str, log: Log, force: bool = False) -> dict:
    """Build one image unless its tag exists; streamed step lines, the full log kept on disk."""
    tag = spec.tag
    if not force and image_exists(client, tag):
        client.api.tag(tag, *spec.alias.split(":"))
        log(f"{tag}: up to date, no build")
        return {"kind": spec.kind, "tag": tag, "built": False, "seconds": 0.0}
    log(f"{tag}: building ({spec.dockerfile.name})")
    t0 = time.monotonic()
    logdir = toolkit_home() / "images" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    logfile = logdir / f"{spec.repo}-{spec.variant}.log"
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=toolkit_home() / "images"))
    tail: collections.deque = collections.deque(maxlen=LOG_TAIL)
    step = "?"
    try:
        shutil.copy2(spec.dockerfile, ctx / "Dockerfile")
        (ctx / "wheels").mkdir()
        (ctx / "runtime").mkdir()
        for f in spec.files:
            f.write(ctx)
        args = {**spec.build_args, "BASE_IMAGE": base_ref}
        if spec.wheels is not None and not spec.wheels(ctx / "wheels", log):
            args["PIP_NO_INDEX"] = "0"
        stream = client.api.build(path=str(ctx), dockerfile="Dockerfile", tag=tag, buildargs=args, rm=True, forcerm=True,
                                  decode=True, labels={LABEL: spec.digest, "org.toolkit.kind": spec.kind})
        pending = ""
        with open(logfile, "w") as lf:
            for chunk in stream:
                # "stream" chunks are pieces of the output, not always whole lines.
                # The legacy builder wraps RUN's stderr in colour codes, character by character.
                # (so an escape sequence can be split between two chunks: stripped from whole lines).
                pending += (chunk.get("stream") or "") + (chunk["error"] + "\n" if "error" in chunk else "")
                *lines, pending = pending.replace("\r", "\n").split("\n")
                for line in map(lambda ln: _ANSI.sub("", ln), lines):
                    lf.write(line + "\n")
                    if line.strip():
                        tail.append(line.strip()[:300])
                    if line.startswith("Step "):
                        step = line.strip()
                        log(f"  {step[:160]}")
                if "error" in chunk:
                    raise ToolkitError(f"building {tag} failed at {step[:200]}",
                                       hint="last lines of the build log (full log: " + str(logfile) + "):\n    "
                                            + "\n    ".join(list(tail)[-6:]))
    except ToolkitError:
        raise
    except Exception as exc:
        import docker

        if isinstance(exc, docker.errors.APIError):
            raise ToolkitError(f"building {tag} failed: {exc.explanation or exc}", hint=f"full log: {logfile}") from None
        raise
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    client.api.tag(tag, *spec.alias.split(":"))
    _drop_older(client, spec, log)
    secs = round(time.monotonic() - t0, 1)
    log(f"{tag}: built in {secs:.0f}s")
    return {"kind": spec.kind, "tag": tag, "built": True, "seconds": secs}


def _drop_older(client, spec: ImageSpec, log: Log) -> None:
    """Untag earlier builds of the same image and variant, so stale gigabytes do not pile up."""
    for img in client.images.list(name=spec.repo):
        for t in img.tags:
            if t.startswith(f"{spec.repo}:{spec.variant}-") and t != spec.tag:
                try:
                    client.images.remove(t)
                    log(f"  removed the earlier build {t}")
                except Exception:
                    pass  # in use by a container: left alone


def specs(opts: BuildOptions, targets: list[Target], kinds: list[str], trainer_variants: list[str]) -> list[ImageSpec]:
    out: list[ImageSpec] = []
    if "trainer" in kinds:
        out += [trainer_spec(opts, v) for v in trainer_variants]
    if "converter" in kinds:
        seen = set()
        for t in targets:
            if t.lite.version not in seen:
                seen.add(t.lite.version)
                out.append(converter_spec(opts, t))
    if "runtime" in kinds:
        out += [runtime_spec(opts, t) for t in targets]
    return out


def build_images(targets: list[Target], kinds: list[str], opts: BuildOptions, trainer_variants: list[str] = ("cpu",),
                 log: Log = print, client=None) -> list[dict]:
    """Entry point of `toolkit images build`: base image, then each image (skipped when up to date)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ToolkitError(f"--kind {', '.join(bad)}: unknown image kind", hint="use trainer, converter or runtime")
    todo = specs(opts, targets, kinds, list(trainer_variants))  # argument errors before any engine work
    for spec in todo:
        spec.prepare(log)  # a Lite source at the wrong commit is refused here, before any engine work
    client = client or engine()
    base_id = ensure_base(client, opts, log)
    base_ref = opts.base_image or BASE_NAME
    results = []
    for spec in todo:
        spec.base_id = base_id
        res = build(client, spec, base_ref, log, force=opts.force)
        if spec.kind == "runtime":
            res["runtime_dir"] = str(export_runtime(client, spec.tag, next(t for t in targets if t.images.runtime == spec.repo), log))
        results.append(res)
    built = [r for r in results if r["built"]]
    log(f"images: {len(built)} built, {len(results) - len(built)} up to date (no build work)" if results else "images: nothing to build")
    return results


def export_runtime(client, tag: str, target: Target, log: Log) -> Path:
    """Copy the runtime image's /opt/runtime/{bin,lib} to TOOLKIT_HOME/runtime/<target>/ (what bundles carry)."""
    import io

    from toolkit.stages.bundle import runtime_dir

    dest = runtime_dir(target)
    c = client.containers.create(tag, command=["true"])
    try:
        bits, _ = c.get_archive("/opt/runtime")
        buf = io.BytesIO(b"".join(bits))
    finally:
        c.remove(force=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=dest.parent if dest.parent.exists() else None))
    with tarfile.open(fileobj=buf) as tf:
        tf.extractall(tmp, filter="data")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp / "runtime"), dest)
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"runtime for {target.name}: {dest}")
    return dest


def find_image(client, spec: ImageSpec) -> str | None:
    return spec.tag if image_exists(client, spec.tag) else None
