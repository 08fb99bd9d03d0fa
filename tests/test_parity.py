"""The device runner's pre- and post-processing against the host pipeline's, on x86, no device.

docker/runtime/ppocr_runner.cc is compiled natively against the stand-in Lite header
(docker/runtime/stub/paddle_api.h), whose det "model" returns the probability maps the host's
Paddle Inference float det model computed for the same pages. Both sides then post-process the
same maps: DBPostProcess boxes (matched at IoU >= 0.9), the box filter and reading order, the
line crops and the rec model's input (compared pixel by pixel after the same resize, in grey
levels). The stub also records the det input tensors, which checks the det resize.

The pages are `toolkit data synth` det images unless TOOLKIT_PARITY_DATA names a dataset folder
(det/eval.txt, topped up from det/train.txt), e.g. `toolkit data real`'s pages. Images reach the runner as PNG written from the host's own
decode, so a JPEG decoder difference (stb_image vs libjpeg) is not counted as a runner
difference. The figures are printed and written to TOOLKIT_PARITY_REPORT when set.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from devices.native_runner import build_stub_runner

PAGES = 20
DATA_ENV, REPORT_ENV = "TOOLKIT_PARITY_DATA", "TOOLKIT_PARITY_REPORT"


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    from toolkit.data.labels import read_det_labels

    if os.environ.get(DATA_ENV):
        data = Path(os.environ[DATA_ENV])
    else:
        from toolkit.data.synth import synth_dataset

        data = tmp_path_factory.mktemp("parity") / "synth"
        synth_dataset(data, det_train=0, det_eval=PAGES, rec_train=0, rec_eval=0, seed=7)
    # Labels do not matter here, only pages: the train split tops up a small eval split.
    samples = read_det_labels(data / "det" / "eval.txt", None, "skip")[0]
    if len(samples) < PAGES and (data / "det" / "train.txt").exists():
        samples += read_det_labels(data / "det" / "train.txt", None, "skip")[0]
    assert len(samples) >= PAGES, f"{data}: {len(samples)} det images, the check wants {PAGES}"
    return [s.image for s in samples[:PAGES]]


def run_batch(exe: Path, bundle: Path, items: list[tuple[str, str, str]], name: str, env: dict) -> dict:
    from toolkit.runtime_parity import read_results, write_batch

    out = bundle / name
    out.mkdir()
    write_batch(bundle / f"{name}.tsv", items)
    r = subprocess.run([str(exe), "--config", "config.json", "--batch", f"{name}.tsv", "--out", name, "--threads", "1"], cwd=bundle,
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_results(out)


def test_runner_matches_host_pipeline(tmp_path, pages):
    import cv2

    from toolkit.data.images import read_image
    from toolkit.models.sources import resolve_source
    from toolkit.runtime_parity import crop, db_boxes, det_input, grey_levels, match_boxes, rec_input, text_boxes
    from toolkit.stages.evaluate import infer, predictor
    from toolkit.tasks import get_task

    exe = build_stub_runner(tmp_path)
    det_src, rec_src = resolve_source("det", None), resolve_source("rec", None)
    det_cfg, rec_cfg = det_src.load_config(), rec_src.load_config()
    # The bundle's config.json, as toolkit/stages/bundle.py writes it (runtime_config of each task).
    b = tmp_path / "bundle"
    for d in ("models", "dict", "pages", "maps", "dump-det", "dump-ocr", "dump-rec", "crops"):
        (b / d).mkdir(parents=True)
    cfg = {"threads": 1, "power_mode": "LITE_POWER_HIGH", "det": get_task("det").runtime_config(det_cfg),
           "rec": get_task("rec").runtime_config(rec_cfg)}
    (b / "config.json").write_text(json.dumps(cfg))
    (b / "models/det.nb").write_bytes(b"")
    (b / "models/rec.nb").write_bytes(b"")
    (b / cfg["rec"]["dict"]).write_text("a\nb\nc\n")

    pred = predictor(det_src.inference_dir, threads=2)
    host = []
    for k, path in enumerate(pages):
        img = read_image(path)
        cv2.imwrite(str(b / "pages" / f"{k}.png"), img)
        x, shape = det_input(img, det_cfg)
        prob = infer(pred, x)[0, 0].astype(np.float32)
        np.save(b / "maps" / f"det-{k}.npy", prob)
        raw = db_boxes(prob, shape, det_cfg)
        boxes = text_boxes(raw, img.shape)
        crops = [crop(img, q) for q in boxes]
        host.append({"x": x, "raw": raw, "boxes": boxes, "rec": [rec_input(c, rec_cfg)[0] for c in crops], "crops": crops})

    # det: input tensors and DBPostProcess boxes
    det = run_batch(exe, b, [("det", f"p{k}", f"pages/{k}.png") for k in range(len(pages))], "out-det",
                    {"PPOCR_STUB_DET_MAPS": str(b / "maps"), "PPOCR_STUB_DUMP": str(b / "dump-det")})
    std = np.array(det_cfg["Eval"]["std"], dtype=np.float64)[:, None, None]
    det_grey = max(float((np.abs(np.load(b / "dump-det" / f"det-{k}.npy")[0] - h["x"][0]) * std * 255).max()) for k, h in enumerate(host))
    raw_host = raw_dev = raw_matched = raw_same = 0
    for k, h in enumerate(host):
        m = match_boxes(h["raw"], det[f"p{k}"]["boxes"])
        raw_host, raw_dev, raw_matched = raw_host + len(h["raw"]), raw_dev + len(det[f"p{k}"]["boxes"]), raw_matched + len(m.pairs)
        raw_same += sum(np.array_equal(h["raw"][i], det[f"p{k}"]["boxes"][j]) for i, j, _ in m.pairs)

    # ocr: the box filter and reading order, the crops and the rec inputs (the stub reads every line as "abc")
    ocr = run_batch(exe, b, [("ocr", f"p{k}", f"pages/{k}.png") for k in range(len(pages))], "out-ocr",
                    {"PPOCR_STUB_DET_MAPS": str(b / "maps"), "PPOCR_STUB_DUMP": str(b / "dump-ocr")})
    n_rec, crops_ok, crops_total, same_order, worst = 0, 0, 0, 0, 0.0
    for k, h in enumerate(host):
        lines = ocr[f"p{k}"]["lines"]
        m = match_boxes(h["boxes"], [ln["box"] for ln in lines])
        same_order += [i for i, _, _ in m.pairs] == [j for _, j, _ in m.pairs] and not m.only_a and not m.only_b
        for i, j, _ in m.pairs:
            g = grey_levels(h["rec"][i], np.load(b / "dump-ocr" / f"rec-{n_rec + j}.npy")[0])
            crops_ok += g <= 2
            worst = max(worst, g)
        crops_total += len(h["boxes"])
        n_rec += len(lines)

    # rec alone: the host's crops as PNG, the runner's resize against the host's
    items = [(k, i) for k, h in enumerate(host) for i in range(len(h["crops"]))][:200]
    for k, i in items:
        cv2.imwrite(str(b / "crops" / f"{k}-{i}.png"), host[k]["crops"][i])
    run_batch(exe, b, [("rec", f"c{n}", f"crops/{k}-{i}.png") for n, (k, i) in enumerate(items)], "out-rec",
              {"PPOCR_STUB_DUMP": str(b / "dump-rec")})
    rec_grey = [grey_levels(host[k]["rec"][i], np.load(b / "dump-rec" / f"rec-{n}.npy")[0]) for n, (k, i) in enumerate(items)]

    figures = {"pages": len(pages), "data": os.environ.get(DATA_ENV) or "toolkit data synth (seed 7)",
               "det_input_max_grey_diff": round(det_grey, 3),
               "boxes": {"host": raw_host, "runner": raw_dev, "matched_iou_0.9": raw_matched, "identical": raw_same,
                         "matched_of_host": round(raw_matched / max(raw_host, 1), 4), "matched_of_runner": round(raw_matched / max(raw_dev, 1), 4)},
               "crops": {"host": crops_total, "within_2_grey": crops_ok, "share": round(crops_ok / max(crops_total, 1), 4),
                         "worst_grey": worst if np.isfinite(worst) else "shape differs"},
               "pages_same_lines_same_order": same_order,
               "rec_resize": {"lines": len(rec_grey), "max_grey": max(rec_grey) if rec_grey else 0.0}}
    print(json.dumps(figures, indent=2))
    if os.environ.get(REPORT_ENV):
        Path(os.environ[REPORT_ENV]).write_text(json.dumps(figures, indent=2))
    assert raw_host > 5 * len(pages), figures  # the pages do have text
    assert figures["boxes"]["matched_of_host"] >= 0.99 and figures["boxes"]["matched_of_runner"] >= 0.99, figures
    assert figures["crops"]["share"] >= 0.99, figures
    assert det_grey <= 2 and figures["rec_resize"]["max_grey"] <= 2, figures
