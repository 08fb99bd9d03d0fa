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
    """Without --lite-source the runtime image clones Paddle Lite's repository itself, and fails
    there: no GitHub from here. The error names the step and shows the log's tail."""
    p = toolkit("images", "build", "--kind", "runtime", "--target", "linux-arm64", timeout=1800)
    assert p.returncode != 0 and "Traceback" not in p.stderr + p.stdout
    # Step lines are progress; from the error line on, the message is short and to the point.
    err = p.stderr[p.stderr.index("error: "):]
    assert len(err.strip().splitlines()) <= 12, err
    assert "failed at Step" in err and "LITE_KIND" in err.splitlines()[0], err
    assert "hint: last lines of the build log" in err and "cloning https://github.com/PaddlePaddle/Paddle-Lite.git at v2.12" in err
    assert "Could not resolve host" in err or "Failed to connect" in err or "unable to access" in err, err


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
    the last stdout line's JSON contract, and the batch mode's outputs. Its pre/post-processing
    against PaddleOCR's is tests/test_parity.py; the real build is the runtime image's job."""
    import numpy as np
    from PIL import Image

    from devices.native_runner import build_stub_runner
    from toolkit.models.sources import resolve_source
    from toolkit.targets import get_target
    from toolkit.tasks import get_task

    exe = build_stub_runner(tmp_path)
    import subprocess

    b = tmp_path / "bundle"
    (b / "models").mkdir(parents=True)
    (b / "models/det.nb").write_bytes(b"")
    (b / "models/rec.nb").write_bytes(b"")
    # config.json as toolkit/stages/bundle.py writes it: the target's defaults and each task's runtime_config
    target = get_target(TARGET)
    cfg = {"lite_version": target.lite.version, "threads": target.defaults.threads, "power_mode": target.defaults.power_mode,
           **{t: get_task(t).runtime_config(resolve_source(t, None).load_config()) for t in ("det", "rec")}}
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
    assert set(out["timings_ms"]) == {"det", "rec", "total"} and out["lite_version"] == "stub"
    assert [ln["text"] for ln in out["lines"]] == ["abc"]
    box = out["lines"][0]["box"]
    assert len(box) == 4 and all(0 <= x < 400 and 0 <= y < 200 for x, y in box)
    # the det region (rows 1/4..1/2, columns 1/4..3/4 of the resized input) grown by PaddleOCR's unclip
    assert box[0][0] < 100 < box[1][0] and 300 < box[1][0] and box[0][1] < 50 and 100 <= box[2][1] < 130, box
    bad = subprocess.run([str(exe), "--config", "config.json", "--image", "missing.jpg"], cwd=b, capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot decode image missing.jpg" in bad.stderr

    # Batch mode: det writes the probability map (.npy) and boxes, rec the text, ocr the lines; a bad
    # item is reported on its own line and makes the exit status 2, after the others ran.
    Image.new("RGB", (160, 48), "white").save(b / "test/line.png")
    (b / "out").mkdir()
    (b / "list.tsv").write_text("det\tpage\ttest/image.jpg\nrec\tline-1\ttest/line.png\nocr\tpage-ocr\ttest/image.jpg\n"
                                "rec\tgone\tmissing.png\n")
    r = subprocess.run([str(exe), "--config", "config.json", "--batch", "list.tsv", "--out", "out", "--threads", "1"], cwd=b,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "rec gone: cannot decode image missing.png" in r.stderr, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["batch"]["items"] == 4 and summary["batch"]["errors"] == 1 and summary["threads"] == 1
    res = {d["id"]: d for d in map(json.loads, (b / "out/results.jsonl").read_text().splitlines())}
    prob = np.load(b / "out" / res["page"]["prob"])
    assert prob.dtype == np.float32 and prob.shape == (192, 384) == tuple(res["page"]["shape"]) and prob.max() == np.float32(0.9)
    assert len(res["page"]["boxes"]) == 1 and 0.8 < res["page"]["scores"][0] <= 0.9
    assert (res["line-1"]["text"], round(res["line-1"]["score"], 2)) == ("abc", 0.95)
    assert [ln["text"] for ln in res["page-ocr"]["lines"]] == ["abc"] and "error" in res["gone"]
