"""Containers: images built for real against a Docker engine, stages run in them.

The engine-backed tests need a real engine; in CI (CI=true) its absence is a failure, not a
skip (.ci/run starts dockerd). Images are tagged by a hash of their inputs, so the builds
here are paid once per machine and later runs find them up to date.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_clean_failure, toolkit

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
TARGET = "android-arm64"


@pytest.fixture(scope="module")
def engine():
    from toolkit.errors import ToolkitError
    from toolkit.runners.images import engine as connect

    try:
        return connect(timeout=30)
    except ToolkitError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine (.ci/run starts dockerd): {exc.message}")
        pytest.skip(f"no Docker engine: {exc.message}")


@pytest.fixture(scope="module")
def images(engine):
    """trainer (CPU) + converter built (or found up to date) once for this module."""
    t0 = time.monotonic()
    p = toolkit("images", "build", "--kind", "trainer", "--kind", "converter", "--target", TARGET, "--json", timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    print(f"images build: {time.monotonic() - t0:.0f}s, {[(r['tag'], r['built'], r['seconds']) for r in res]}")
    return res


# ------------------------------------------------------------------ no engine needed
def test_no_engine_is_a_clear_error():
    p = toolkit("images", "build", env=NO_ENGINE)
    assert_clean_failure(p, "no Docker engine is reachable", "hint:")


def test_runner_docker_without_engine_is_a_clear_error(tmp_path):
    p = toolkit("run", "--runner", "docker", "--run-dir", tmp_path / "run", env=NO_ENGINE)
    assert_clean_failure(p, "no Docker engine is reachable")


def test_runner_auto_falls_back_to_local():
    from toolkit.runners import get_runner
    from toolkit.runners.local import LocalRunner

    os.environ["DOCKER_HOST"], old = NO_ENGINE["DOCKER_HOST"], os.environ.get("DOCKER_HOST")
    try:
        assert isinstance(get_runner("auto"), LocalRunner)
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old


def test_unpinned_runtime_archive_is_refused():
    p = toolkit("images", "build", "--kind", "runtime", "--target", "linux-arm64", env=NO_ENGINE)
    assert_clean_failure(p, "runtime.sha256 is null", "--runtime-sha256")


def test_ndk_download_needs_a_checksum():
    p = toolkit("images", "build", "--kind", "runtime", "--target", "android-arm64", "--runtime-sha256", "android-arm64=" + "0" * 64, env=NO_ENGINE)
    assert_clean_failure(p, "NDK", "--ndk-sha256")


def test_image_tag_is_a_hash_of_the_inputs(tmp_path):
    from toolkit.runners.images import BuildOptions, trainer_spec

    a = trainer_spec(BuildOptions())
    assert a.tag == trainer_spec(BuildOptions()).tag
    ca = tmp_path / "proxy.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert trainer_spec(BuildOptions(ca_certs=[ca])).tag != a.tag
    assert trainer_spec(BuildOptions(pip_index_url="https://mirror.example/simple", wheelhouse=False)).tag != a.tag
    assert trainer_spec(BuildOptions(), "gpu").tag.startswith("toolkit-trainer:gpu-")


def test_mounts_same_path_and_nesting(tmp_path):
    from toolkit.runners.docker import mounts_for

    (tmp_path / "a" / "b").mkdir(parents=True)
    m = mounts_for([tmp_path / "a", tmp_path / "a" / "b", tmp_path / "missing"], [tmp_path / "a" / "b"])
    assert m == {str(tmp_path / "a"): {"bind": str(tmp_path / "a"), "mode": "ro"},
                 str(tmp_path / "a" / "b"): {"bind": str(tmp_path / "a" / "b"), "mode": "rw"}}


def test_doctor_json():
    p = toolkit("doctor", "--json", env=NO_ENGINE)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["docker engine"]["ok"] is False and "docker" in rows["docker engine"]["fix"]
    assert any(name.startswith("Python 3.7") for name in rows)
    assert all(r["fix"] for r in rows.values() if r["ok"] is False)


# ------------------------------------------------------------------ real engine
@pytest.mark.slow
def test_second_build_does_no_work(images):
    t0 = time.monotonic()
    p = toolkit("images", "build", "--kind", "trainer", "--kind", "converter", "--target", TARGET)
    secs = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    for r in images:
        assert f"{r['tag']}: up to date, no build" in p.stderr, p.stderr
        assert r["tag"] in p.stdout and "up to date (no build)" in p.stdout
    assert "0 built, 2 up to date (no build work)" in p.stderr, p.stderr
    assert "Step " not in p.stderr and "building" not in p.stderr
    assert secs < 60, secs


@pytest.mark.slow
def test_gpus_requested_but_absent(engine, images, tmp_path, small_data):
    from toolkit.runners.docker import gpu_status

    if gpu_status(engine)["nvidia_runtime"] and gpu_status(engine)["host_gpus"]:
        pytest.skip("this host has GPUs and the NVIDIA runtime")
    p = toolkit("quantize", "--runner", "docker", "--device", "gpu", "--tasks", "det", "--data", small_data, "--run-dir", tmp_path / "run")
    assert_clean_failure(p, "GPUs were requested", "nvidia")


@pytest.mark.slow
def test_failed_build_step_shows_the_log_tail(engine):
    """The runtime image builds up to the Paddle Lite download (its toolchain included), then
    fails there: no GitHub from here. The error names the step and shows the log's tail."""
    p = toolkit("images", "build", "--kind", "runtime", "--target", "linux-arm64", "--runtime-sha256", "linux-arm64=" + "0" * 64, timeout=1800)
    assert p.returncode != 0 and "Traceback" not in p.stderr + p.stdout
    # Step lines are progress; from the error line on, the message is short and to the point.
    err = p.stderr[p.stderr.index("error: "):]
    assert len(err.strip().splitlines()) <= 12, err
    assert "failed at Step" in err and "LITE_ARCHIVE" in err.splitlines()[0], err
    assert "hint: last lines of the build log" in err and "curl" in err
    assert "Could not resolve host" in err or "Failed to connect" in err, err


@pytest.mark.slow
def test_container_files_belong_to_the_calling_user(engine, images, tmp_path):
    """A container run for uid 4321 writes files owned by 4321 into the bind-mounted folder."""
    from toolkit.runners.docker import mounts_for, run_container

    out = tmp_path / "owned"
    out.mkdir()
    os.chown(out, 4321, 4321)
    trainer = next(r["tag"] for r in images if r["kind"] == "trainer")
    code, stdout, tail = run_container(engine, trainer, ["python", "-m", "toolkit.cli", "data", "synth", "--out", str(out / "d"),
                                                         "--det-train", "1", "--det-eval", "1", "--rec-train", "2", "--rec-eval", "2"],
                                       mounts_for([REPO / "toolkit"], [out]), log=lambda m: None, user="4321:4321")
    assert code == 0, tail
    files = [p for p in out.rglob("*")]
    assert files and all(p.stat().st_uid == 4321 and p.stat().st_gid == 4321 for p in files)


def _nb_summary(run_dir: Path) -> dict:
    conv = json.loads((run_dir / "nb" / TARGET / "convert.json").read_text())
    return {(task, prec): (conv[task][prec]["ops"], conv[task][prec]["int8_op_types"], conv[task][prec]["lite_version"])
            for task in ("det", "rec") for prec in ("float", "int8")}


@pytest.mark.slow
def test_docker_runner_matches_local(images, tmp_path):
    """quantize, export, convert (and evaluate) for android-arm64 in the containers and locally,
    on the same small job: same .nb op lists and int8 kernels, metrics within 0.1 point."""
    data = tmp_path / "data"
    p = toolkit("data", "synth", "--out", data, "--det-train", "4", "--det-eval", "4", "--rec-train", "16", "--rec-eval", "16", "--seed", "3")
    assert p.returncode == 0, p.stderr
    # --no-search: the per-layer float fallback search is the same code either way, and slow.
    common = ["run", "--target", TARGET, "--data", data, "--steps", "2", "--batch-size", "2", "--max-drop", "100", "--no-search", "--json"]
    times = {}
    for runner in ("docker", "local"):
        t0 = time.monotonic()
        p = toolkit(*common, "--runner", runner, "--run-dir", tmp_path / runner, timeout=3600)
        times[runner] = round(time.monotonic() - t0)
        assert p.returncode == 0, f"{runner}:\n{p.stderr[-4000:]}"
    print(f"toolkit run seconds: {times}")
    dock, local = tmp_path / "docker", tmp_path / "local"
    a, b = _nb_summary(dock), _nb_summary(local)
    assert a == b
    assert a[("det", "int8")][1] and a[("rec", "int8")][1], "int8 kernels expected in both"
    ma = json.loads((dock / "report.json").read_text())["metrics"]
    mb = json.loads((local / "report.json").read_text())["metrics"]
    for task, key in (("det", "hmean"), ("rec", "acc")):
        for prec in ("float", "quant"):
            assert abs(ma[task][prec][key] - mb[task][prec][key]) * 100 <= 0.1, (task, prec, ma[task], mb[task])
    # What the containers wrote belongs to the calling user.
    uid = os.getuid()
    assert all(p.stat().st_uid == uid for p in dock.rglob("*")), [str(p) for p in dock.rglob("*") if p.stat().st_uid != uid][:5]
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


# ------------------------------------------------------------------ the C++ runner
def test_cpp_runner_contract_against_a_stub_lite(tmp_path):
    """docker/runtime/ppocr_runner.cc compiled natively against a stand-in for Lite's paddle_api.h
    (fixed det region, fixed CTC sequence): config.json as bundle.py writes it, the CLI flags,
    and the last stdout line's JSON contract. The real build (Lite archive, cross toolchain) is
    the runtime image's job."""
    from PIL import Image

    from toolkit.stages.bundle import runtime_config
    from toolkit.models.sources import resolve_source
    from toolkit.targets import get_target

    stb = Path("/usr/include/stb/stb_image.h")
    if not shutil.which("g++") or not stb.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs g++ and libstb-dev (.ci/run installs them)")
        pytest.skip("needs g++ and libstb-dev")
    exe = tmp_path / "ppocr_runner"
    import subprocess

    r = subprocess.run(["g++", "-std=c++14", "-O1", "-Wall", "-Werror", f"-I{REPO / 'docker/runtime/stub'}", f"-I{stb.parent}",
                        str(REPO / "docker/runtime/ppocr_runner.cc"), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    b = tmp_path / "bundle"
    (b / "models").mkdir(parents=True)
    (b / "models/det.nb").write_bytes(b"")
    (b / "models/rec.nb").write_bytes(b"")
    sources = {t: resolve_source(t, None, ()) for t in ("det", "rec")}
    cfg = runtime_config(get_target(TARGET), sources, ["det", "rec"])
    (b / "config.json").write_text(json.dumps(cfg))
    (b / "dict").mkdir()
    (b / cfg["rec"]["dict"]).write_text("a\nb\nc\n\"\n")
    (b / "test").mkdir()
    Image.new("RGB", (400, 200), "white").save(b / "test/image.jpg")
    r = subprocess.run([str(exe), "--config", "config.json", "--image", "test/image.jpg", "--threads", "2", "--power-mode", "LITE_POWER_LOW",
                        "--warmup", "1", "--repeats", "3"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["threads"] == 2 and out["power_mode"] == "LITE_POWER_LOW" and out["warmup"] == 1 and out["repeats"] == 3
    assert set(out["timings_ms"]) == {"det", "rec", "total"}
    assert [ln["text"] for ln in out["lines"]] == ["abc"]
    box = out["lines"][0]["box"]
    assert len(box) == 4 and all(0 <= x < 400 and 0 <= y < 200 for x, y in box)
    # the det region (rows 1/4..1/2, columns 1/4..3/4 of the resized input) grown by the unclip ratio
    assert box[0][0] < 100 < box[1][0] and 300 < box[1][0] and box[0][1] < 50 and 100 <= box[2][1] < 130, box
    bad = subprocess.run([str(exe), "--config", "config.json", "--image", "missing.jpg"], cwd=b, capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot decode image missing.jpg" in bad.stderr
