"""The host side of `--verify` (toolkit/stages/verify.py) without a device: CI has no Paddle Lite
runtime, so the comparison is fed "device" outputs made on the host from the same models, with
known changes (one map dimmed, one line misread, one page line misread, one page line not found),
and must count exactly those, telling the det change from the rec one; the host's own noise (two
implementations of the same model) is reported next to them and named in the failure sentences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def verify_run(tmp_path_factory, small_data):
    """A run whose "quantized" models are the built-in float models, and the verify samples."""
    from toolkit.jobs import VerifyJob
    from toolkit.models.sources import resolve_source
    from toolkit.rundir import RunDir
    from toolkit.stages import verify
    from toolkit.targets import get_target

    root = tmp_path_factory.mktemp("verify")
    run = RunDir(root / "run")
    sources = {t: resolve_source(t, None) for t in ("det", "rec")}
    for t, s in sources.items():
        shutil.copytree(s.inference_dir, run.quant_model(t))
    run.bundle_dir("linux-arm64").mkdir(parents=True)
    (run.bundle_dir("linux-arm64") / "config.json").write_text(json.dumps({"rec": {"drop_score": 0.5}}))
    job = VerifyJob(target=get_target("linux-arm64"), sources=sources, datasets=[small_data], det_images=2, rec_lines=6,
                    pipeline_images=1, host_threads=2)
    (root / "inputs").mkdir()
    samples = verify._samples(job, root / "inputs")
    return run, job, samples


def _device_outputs(run, job, samples) -> dict:
    """What a device computing exactly the host's model would send back, then three known changes."""
    from toolkit.data.images import read_image
    from toolkit.runtime_parity import db_boxes, decode, det_input, host_ocr, rec_input
    from toolkit.stages.evaluate import infer, predictor

    cfgs = {t: job.sources[t].load_config() for t in job.tasks}
    fwd = {t: (lambda x, p=predictor(run.quant_model(t), threads=2): infer(p, x)) for t in job.tasks}
    out: dict = {"det": {}, "rec": {}, "pipeline": {}}
    for k, s in enumerate(samples["det"]):
        x, shape = det_input(read_image(s["image"]), cfgs["det"])
        prob = fwd["det"](x)[0, 0]
        if k == 0:  # the right half of the first page goes dark
            prob = np.where(np.arange(prob.shape[1])[None, :] < prob.shape[1] // 2, prob, 0).astype(prob.dtype)
        out["det"][s["id"]] = {"prob_map": prob, "boxes": [b.tolist() for b in db_boxes(prob, shape, cfgs["det"])]}
    for s in samples["rec"]:
        text, score = decode(fwd["rec"](rec_input(read_image(s["image"]), cfgs["rec"])), cfgs["rec"])
        out["rec"][s["id"]] = {"text": text, "score": score}
    for s in samples["pipeline"]:
        out["pipeline"][s["id"]] = {"lines": host_ocr(read_image(s["image"]), fwd["det"], fwd["rec"], cfgs["det"], cfgs["rec"])}
    out["rec"][samples["rec"][0]["id"]]["text"] += "#"
    page = out["pipeline"][samples["pipeline"][0]["id"]]["lines"]
    page[0]["text"] += "#"   # the device's rec misreads a line
    del page[-1]             # the device's det misses a line
    return out


def test_compare_counts_the_differences_and_the_hosts_own_noise(verify_run):
    from toolkit.stages import verify
    from toolkit.tasks import get_task

    run, job, samples = verify_run
    assert {k: len(v) for k, v in samples.items()} == {"det": 2, "rec": 6, "pipeline": 1}
    res = verify._compare(job, run, samples, _device_outputs(run, job, samples))

    det, rec, pipe = res["det"], res["rec"], res["pipeline"]
    cos = {p["id"]: p["cosine"] for p in det["per_image"]}
    assert cos[samples["det"][1]["id"]] == pytest.approx(1.0, abs=1e-9)      # untouched: the host's own map
    assert cos[samples["det"][0]["id"]] < 0.99 and det["cosine_min"] == cos[samples["det"][0]["id"]]
    assert det["boxes_matched"] < det["boxes_host"] and det["hmean_device"] < det["hmean_host"]
    assert rec["lines"] == 6 and rec["identical"] == round(5 / 6, 4) and rec["identical_ignoring_spaces"] == round(5 / 6, 4)
    assert [p["id"] for p in rec["differ"]] == [samples["rec"][0]["id"]] and rec["differ"][0]["device"].endswith("#")
    assert rec["acc_device"] <= rec["acc_host"]
    n = pipe["lines"]
    assert n >= 3 and pipe["identical"] == round((n - 2) / n, 4)
    assert pipe["per_image"][0]["differ"][0]["device"].endswith("#") and len(pipe["per_image"][0]["only_host"]) == 1
    # The host's rec on the device's boxes: only the missing line (det's part) is left.
    assert pipe["device_boxes_host_rec"] == {"lines": n, "identical": round((n - 1) / n, 4), "identical_ignoring_spaces": round((n - 1) / n, 4)}

    # The second host implementation (Paddle's own kernels, no IR passes) of these float models reads
    # the synthetic samples as oneDNN does; its figures are the host's, not the device's.
    assert 0.99 <= det["host_noise"]["cosine_min"] <= 1.0 and det["host_noise"]["flipped_mean"] < 0.01
    assert rec["host_noise"]["identical"] >= 5 / 6 and pipe["host_noise"]["identical"] >= 0.9
    assert all("host_native" in p for p in rec["differ"])

    # Tolerances: each sentence names what differs and the host's own agreement beside it.
    failures = verify._failures(job, {**res, "ok": False})
    assert len(failures) == 2, failures
    assert failures[0].startswith("det probability-map cosine") and Path(samples["det"][0]["image"]).name in failures[0]
    noise = f"two host implementations of the model agree on {rec['host_noise']['identical']:.1%}"
    assert "rec reads 83.3% of 6 lines as the host does (< 98%;" in failures[1] and noise in failures[1]
    pipe_job = job.model_copy(update={"pipeline_identical_min": 1.0})
    pages = [f for f in verify._failures(pipe_job, res) if f.startswith("whole pages:")]
    assert len(pages) == 1 and "two host implementations" in pages[0]
    assert f"the host's rec on the device's boxes: {(n - 1) / n:.1%}" in pages[0]

    # The deploy table's verify cell.
    from toolkit.cli.devices import _verify_cell

    assert _verify_cell(res) == f"det cos {det['cosine_min']:.4f}, rec 83% same, pages {100 * (n - 2) / n:.1f}% same"

    # What report.html prints in the device column.
    line = get_task("rec").device_summary({"device": "d", **rec})
    assert line.startswith("83.3% lines identical (two host implementations: ") and "(6 lines)" in line
    assert "two host implementations" in get_task("det").device_summary({"device": "d", **det})
    # A device record from before host_noise existed still renders.
    assert get_task("rec").device_summary({k: v for k, v in rec.items() if k != "host_noise"}).startswith("83.3% lines identical;")
