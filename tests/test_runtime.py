"""The device runtime built from pinned sources (docker/runtime.Dockerfile, toolkit/runners/images.py).

Without an engine: downloads are checked against their pins (or recorded on first use), a Paddle
Lite source at the wrong commit is refused before any build work, and the image tag follows every
input. With an engine and a Paddle Lite source (TOOLKIT_LITE_SOURCE=<a clone or bare repository>;
skipped with the reason otherwise, also in CI, which has none): the linux-arm64 runtime image is
built for real, a second build does nothing, and the exported runner reads text under qemu-aarch64
with .nb files converted by the toolkit's own converter.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from toolkit.errors import ToolkitError

LITE_ENV = "TOOLKIT_LITE_SOURCE"
PINNED = "f294964ab818071444d4b6e4d1575e837c28e23d"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_downloads_are_pinned_or_recorded_on_first_use(home, served):
    from toolkit.runners.images import fetch, lock_path

    root, url = served
    (root / "lite.tgz").write_bytes(b"release v1")
    sha = hashlib.sha256(b"release v1").hexdigest()
    notes = []
    path, got = fetch(f"{url}/lite.tgz", sha, "the archive", notes.append)
    assert got == sha and path.read_bytes() == b"release v1" and not lock_path().exists()
    with pytest.raises(ToolkitError) as info:
        fetch(f"{url}/lite.tgz", "0" * 64, "the archive")
    assert f"has sha256 {sha}, expected {'0' * 64} (pinned in the target file)" in info.value.message
    # Unpinned: recorded the first time, with a notice, and checked every time after.
    (root / "other.tgz").write_bytes(b"first")
    path, got = fetch(f"{url}/other.tgz", None, "the archive", notes.append)
    assert json.loads(lock_path().read_text()) == {f"{url}/other.tgz": got}
    assert any(n.startswith("NOTICE: the archive is not pinned: recorded sha256 " + got) for n in notes)
    assert fetch(f"{url}/other.tgz", None, "the archive")[1] == got
    (root / "other.tgz").write_bytes(b"changed under the same URL")
    path.unlink()  # not cached: downloaded again, and refused
    with pytest.raises(ToolkitError) as info:
        fetch(f"{url}/other.tgz", None, "the archive")
    assert f"expected {got} (recorded in {lock_path()} on its first download)" in info.value.message
    assert "delete its line" in info.value.hint


def _git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_lite_source_at_the_wrong_commit_is_refused(home, tmp_path, monkeypatch):
    """A clone whose v2.12 is not the pinned commit: refused before any engine work, naming both."""
    from toolkit.runners.images import BuildOptions, build_images
    from toolkit.targets import get_target

    if not shutil.which("git"):
        pytest.skip("needs git")
    repo = tmp_path / "lite"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "README").write_text("not Paddle Lite\n")
    _git("add", "README", cwd=repo)
    _git("commit", "-q", "-m", "x", cwd=repo)
    actual = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    target = get_target("linux-arm64")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # refused before the engine is asked

    def refused(src) -> ToolkitError:
        with pytest.raises(ToolkitError) as info:
            build_images([target], ["runtime"], BuildOptions(lite_source=src), log=lambda m: None)
        return info.value

    assert "has no tag v2.12" in refused(repo).message
    _git("tag", "v2.12", cwd=repo)
    err = refused(repo)
    assert err.message == f"--lite-source {repo}: tag v2.12 is commit {actual}, but targets/linux-arm64.yaml pins {PINNED}"
    assert "refused" in err.hint
    (tmp_path / "plain").mkdir()
    assert "not a git repository" in refused(tmp_path / "plain").message
    assert "no such directory" in refused(tmp_path / "missing").message


def test_runtime_tag_follows_its_inputs(home, tmp_path):
    from toolkit.runners.images import BuildOptions, runtime_spec
    from toolkit.targets import get_target

    t = get_target("linux-arm64")
    base = runtime_spec(BuildOptions(), t)
    assert base.tag == runtime_spec(BuildOptions(), t).tag and base.tag.startswith("toolkit-runtime-linux-arm64:v2.12-")
    rt = t.runtime
    for changed in (rt.model_copy(update={"cmake_options": {**rt.cmake_options, "WITH_ARM_DOTPROD": "OFF"}}),
                    rt.model_copy(update={"source": rt.source.model_copy(update={"commit": "1" * 40})}),
                    rt.model_copy(update={"opencv": rt.opencv.model_copy(update={"sha256": "2" * 64})})):
        assert runtime_spec(BuildOptions(), t.model_copy(update={"runtime": changed})).tag != base.tag
    info = json.loads(base.build_args["BUILD_INFO"])
    assert info["lite"]["commit"] == PINNED and info["lite"]["cmake_options"]["LITE_BUILD_EXTRA"] == "ON"
    assert info["opencv"]["modules"] == ["core", "imgproc"] and info["toolchain"] == {"kind": "gcc", "triple": "aarch64-linux-gnu"}


# ------------------------------------------------------------------ the real runtime (engine + Paddle Lite source)
def lite_source() -> Path:
    src = os.environ.get(LITE_ENV)
    if not src:
        pytest.skip(f"{LITE_ENV} is not set: no Paddle Lite source (a clone or bare repository with tag v2.12) to build the runtime from")
    return Path(src)


_built: list[Path] = []


def arm64_runtime_dir() -> Path:
    """The linux-arm64 runtime built from TOOLKIT_LITE_SOURCE (first time ~25 min on 2 cores, then
    up to date), exported to TOOLKIT_HOME; skips without a Lite source or an engine."""
    from toolkit.runners.images import BuildOptions, build_images, engine
    from toolkit.targets import get_target

    src = lite_source()
    if not _built:
        try:
            client = engine(timeout=30)
        except ToolkitError as exc:
            pytest.skip(f"no Docker engine: {exc.message}")
        res = build_images([get_target("linux-arm64")], ["runtime"], BuildOptions(lite_source=src), log=print, client=client)
        _built.append(Path(res[0]["runtime_dir"]))
    return _built[0]


@pytest.fixture
def arm64_runtime() -> Path:
    return arm64_runtime_dir()


@pytest.mark.slow
def test_runtime_image_from_pinned_source(arm64_runtime):
    from toolkit.runners.images import BuildOptions, build_images
    from toolkit.targets import get_target

    info = json.loads((arm64_runtime / "BUILD-INFO.json").read_text())
    assert (info["lite"]["tag"], info["lite"]["commit"], info["lite"]["built"]) == ("v2.12", PINNED, f"source {info['lite']['repository']} v2.12 {PINNED}")
    assert "aarch64-linux-gnu-g++" in info["compilers"]["runner_and_lite"] and info["opencv"]["version"] == "4.6.0"
    assert {"ppocr_runner"} == {p.name for p in (arm64_runtime / "bin").iterdir()}
    assert (arm64_runtime / "lib" / "libpaddle_light_api_shared.so").stat().st_size > 1_000_000
    # Nothing from the build machine is needed beyond glibc: OpenCV and Clipper are static, libstdc++ too.
    needed = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(arm64_runtime / "bin" / "ppocr_runner")], capture_output=True, text=True).stdout
    assert "opencv" not in needed and "polyclipping" not in needed and "libstdc++" not in needed, needed
    lines = []
    res = build_images([get_target("linux-arm64")], ["runtime"], BuildOptions(lite_source=lite_source()), log=lines.append)
    assert res[0]["built"] is False and any("up to date, no build" in ln for ln in lines)


def convert_zoo(out: Path, target: str = "linux-arm64") -> dict[str, Path]:
    """Float .nb files of the built-in det and rec models, by the toolkit's converter environment."""
    from toolkit.models.sources import resolve_source
    from toolkit.runners.envs import ensure_converter
    from toolkit.targets import get_target

    py = ensure_converter(get_target(target))
    out.mkdir(parents=True, exist_ok=True)
    nbs = {}
    for task in ("det", "rec"):
        d = resolve_source(task, None).inference_dir
        r = subprocess.run([str(py.parent / "paddle_lite_opt"), f"--model_file={d / 'inference.pdmodel'}", f"--param_file={d / 'inference.pdiparams'}",
                            "--optimize_out_type=naive_buffer", f"--optimize_out={out / task}", "--valid_targets=arm"], capture_output=True, text=True)
        assert r.returncode == 0 and (out / f"{task}.nb").exists(), r.stdout[-2000:] + r.stderr[-2000:]
        nbs[task] = out / f"{task}.nb"
    return nbs


def text_image(path: Path, text: str) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    from toolkit.data.synth import find_fonts

    img = Image.new("RGB", (480, 96), "white")
    ImageDraw.Draw(img).text((24, 24), text, fill="black", font=ImageFont.truetype(str(find_fonts()[0]), 36))
    img.save(path)
    return path


@pytest.mark.slow
def test_runner_reads_text_under_qemu(arm64_runtime, tmp_path):
    """The exported runtime on float .nb files of the built-in models, under qemu-aarch64 with the cross
    toolchain's libraries: it reads the line, exactly as the host pipeline (Paddle Inference) does."""
    from toolkit.tasks import get_task
    from toolkit.models.sources import resolve_source

    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu or not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        pytest.skip("needs qemu-user-static and the aarch64 cross libraries (libc6-dev-arm64-cross)")
    b = tmp_path / "bundle"
    shutil.copytree(arm64_runtime, b / "runtime")
    nbs = convert_zoo(b / "models")
    rec_cfg = resolve_source("rec", None).load_config()
    cfg = {"threads": 1, "power_mode": "LITE_POWER_HIGH", "det": get_task("det").runtime_config(resolve_source("det", None).load_config()),
           "rec": get_task("rec").runtime_config(rec_cfg)}
    (b / "dict").mkdir()
    shutil.copy2(rec_cfg["Global"]["character_dict_path"], b / cfg["rec"]["dict"])
    (b / "config.json").write_text(json.dumps(cfg))
    (b / "test").mkdir()
    text_image(b / "test/image.png", "Device truth 2024")
    assert sorted(p.name for p in nbs.values()) == ["det.nb", "rec.nb"]
    r = subprocess.run([qemu, "-L", "/usr/aarch64-linux-gnu", "runtime/bin/ppocr_runner", "--config", "config.json", "--image", "test/image.png",
                        "--threads", "1", "--warmup", "0"], cwd=b, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "LD_LIBRARY_PATH": "runtime/lib"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # PP-OCRv4's Chinese+Latin recogniser drops these spaces; Paddle Inference on the host reads the same.
    assert out["lite_version"] == "v2.12" and [ln["text"].replace(" ", "") for ln in out["lines"]] == ["Devicetruth2024"], out
    from toolkit.data.images import read_image
    from toolkit.runtime_parity import host_ocr
    from toolkit.stages.evaluate import infer, predictor

    pred = {t: predictor(resolve_source(t, None).inference_dir) for t in ("det", "rec")}
    host = host_ocr(read_image(b / "test/image.png"), lambda x: infer(pred["det"], x), lambda x: infer(pred["rec"], x),
                    resolve_source("det", None).load_config(), rec_cfg)
    assert [(h["text"], h["box"]) for h in host] == [(d["text"], d["box"]) for d in out["lines"]]
    assert abs(host[0]["score"] - out["lines"][0]["score"]) < 1e-3
