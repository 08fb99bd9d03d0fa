"""On-device verification: the bundle's runner, with the real Paddle Lite runtime on the device,
against the host's fake-quant model (Paddle Inference) on the same inputs.

The accuracy in report.json is the fake-quant model's on the host; this checks that the device
computes what that model computes, so the figure holds for the device. N eval samples (det pages,
rec line crops) go next to the installed bundle, the runner's batch mode
(`ppocr_runner --batch LIST --out DIR`, see docker/runtime/ppocr_runner.cc) runs them there, and
its outputs come back:

  det       probability-map cosine and the share of pixels that flip at the DB threshold, per page;
            the device's boxes against the host's (IoU >= 0.9); hmean against the labels of each
  rec       the share of lines the device reads exactly as the host does; accuracy of each
  pipeline  det -> crop -> rec on whole pages: device lines against the host pipeline's (toolkit/
            runtime_parity.py host_ocr), paired by box (IoU >= 0.5), the share read identically
            (reported; a failure only with pipeline_identical_min). device_boxes_host_rec: the same
            share when the host's rec reads the boxes the device found, i.e. what the device's det
            alone changes; the rest of the gap is the device's rec on those crops
  host_noise  the same figures for two host implementations of the same fake-quant model against
            each other: Paddle Inference with oneDNN (the reference above) and Paddle's own CPU
            kernels without IR passes. An int8 model's decisions that sit at a quantizer's rounding
            boundary go either way with any change of summation order, so this is the agreement a
            correct device can be expected to reach (reported next to each tolerance)

Images travel as PNG written from the host's own decode, so both sides see the same pixels. With
the stand-in runner (tests; it runs no Paddle Lite) the result says `"standin": true` and compares
nothing. Below a tolerance the check fails with a VerifyFailed naming the samples that differ; it
carries the result, so the caller can still record the figures.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from toolkit.errors import ToolkitError
from toolkit.jobs import VerifyJob
from toolkit.rundir import RunDir, atomic_write_json

RUNNER = "runtime/bin/ppocr_runner"
RUNNER_KIND = {"det": "det", "rec": "rec", "pipeline": "ocr"}   # sample kind -> the runner's batch kind
Log = Callable[[str], None]


class VerifyFailed(ToolkitError):
    """Below a tolerance; `result` holds every figure."""

    def __init__(self, message: str, hint: str, result: dict):
        super().__init__(message, hint=hint)
        self.result = result


def verify(job: VerifyJob, run: RunDir, transport, out_dir: Path, log: Log | None = None) -> dict:
    """Entry point, after the bundle is installed on `transport` (a toolkit.devices Transport).

    Returns {"device", "standin", "det": {...}, "rec": {...}, "pipeline": {...}, "ok", "seconds"};
    the per-task dicts are what report.json carries under metrics.<task>.device. Also written to
    OUT_DIR/verify.json (the deploy stage passes RUN/deploy/<target>/<device>/verify/)."""
    log = log or (lambda m: None)
    t0 = time.monotonic()
    target = job.target
    bundle = run.bundle_dir(target.name)
    if not (bundle / RUNNER).is_file():
        raise ToolkitError(f"the {target.name} bundle has no runtime ({RUNNER})",
                           hint=f"build it (`toolkit images build --kind runtime --target {target.name}`), then `toolkit bundle` again")
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "inputs").mkdir(parents=True)
    samples = _samples(job, out_dir / "inputs")
    root = transport.root(target.transport.device_dir)
    remote = f"{root}/verify-{int(time.time())}"
    from toolkit.runtime_parity import write_batch

    for kind, items in samples.items():  # the runner reads the images where they land on the device
        write_batch(out_dir / "inputs" / f"list-{kind}.tsv", [(RUNNER_KIND[kind], x["id"], f"{remote}/{x['png']}") for x in items])
    result: dict = {"device": transport.name, "standin": False, "samples": {k: len(v) for k, v in samples.items()},
                    "datasets": {k: dict(Counter(x["dataset"] for x in v)) for k, v in samples.items() if v}}
    outputs: dict[str, dict] = {}
    try:
        transport.push_dir(out_dir / "inputs", remote)
        for kind, items in samples.items():
            if not items:
                continue
            log(f"{transport.name}: verify {kind}: {len(items)} sample(s) on the device")
            summary = _run_batch(job, transport, root, remote, kind)
            transport.pull_dir(f"{remote}/out-{kind}", out_dir / f"out-{kind}")
            if summary.get("standin"):
                result["standin"] = True
                break
            from toolkit.runtime_parity import read_results

            outputs[kind] = read_results(out_dir / f"out-{kind}")
            result.setdefault("runtime", {"lite_version": summary.get("lite_version"), "threads": summary.get("threads")})
    finally:
        transport.shell(f"rm -rf {_q(remote)}", timeout=120)
    if result["standin"]:
        result.update(ok=True, note="stand-in runner (no Paddle Lite): nothing compared", seconds=round(time.monotonic() - t0, 1))
        atomic_write_json(out_dir / "verify.json", result)
        return result
    log("verify: the host's fake-quant models on the same inputs")
    result.update(_compare(job, run, samples, outputs))
    failures = _failures(job, result)
    result.update(ok=not failures, seconds=round(time.monotonic() - t0, 1))
    atomic_write_json(out_dir / "verify.json", result)
    if failures:
        raise VerifyFailed(f"{transport.name}: the device differs from the host's fake-quant model: " + "; ".join(failures),
                           hint=f"per-sample figures in {out_dir / 'verify.json'} (device outputs next to it); a Lite version or "
                                "runtime build other than the converter's is the usual cause", result=result)
    return result


def _q(s: str) -> str:
    from toolkit.devices.base import q

    return q(s)


# ------------------------------------------------------------------ inputs
def _samples(job: VerifyJob, inputs: Path) -> dict[str, list[dict]]:
    """The first eval samples of the judged dataset, then of the others where it has fewer than
    asked (a device check wants enough pages; the real set's eval split may be small), as PNG
    files plus list-<kind>.tsv for the runner."""
    import cv2

    from toolkit.data.datasets import judged, load_split, open_datasets
    from toolkit.data.images import read_image

    datasets = open_datasets(job.datasets)
    (inputs / "images").mkdir()
    out: dict[str, list[dict]] = {"det": [], "rec": [], "pipeline": []}
    splits: dict[tuple[str, Path], list] = {}
    wanted = {"det": ("det", job.det_images), "rec": ("rec", job.rec_lines), "pipeline": ("det", job.pipeline_images)}
    for kind, (task, count) in wanted.items():
        if task not in job.tasks or not count or (kind == "pipeline" and "rec" not in job.tasks):
            continue
        first = judged(datasets, task)
        if first is None:
            raise ToolkitError(f"no {task} eval split to verify on in {', '.join(str(d.path) for d in datasets)}",
                               hint=f"a dataset with {task}/eval.txt")
        for ds in [first] + [d for d in datasets if d is not first and d.has(task, "eval")]:
            if len(out[kind]) >= count:
                break  # loading a split decodes every image of it
            if (task, ds.path) not in splits:  # det pages serve both the det and the pipeline samples
                splits[task, ds.path] = load_split(task, ds, "eval", job.sources[task].load_config(), skip_bad=True)
            for s in splits[task, ds.path][:count - len(out[kind])]:
                name = f"{kind}-{len(out[kind])}"
                cv2.imwrite(str(inputs / "images" / f"{name}.png"), read_image(s.image))
                out[kind].append({"id": name, "image": str(s.image), "dataset": ds.name, "png": f"images/{name}.png", "sample": s})
    return out


def _run_batch(job: VerifyJob, transport, root: str, remote: str, kind: str) -> dict:
    """The runner's batch mode over one kind of sample; its last output line (a JSON summary)."""
    d = job.target.defaults
    r = transport.shell(f"mkdir -p {_q(f'{remote}/out-{kind}')}", timeout=120)
    if r.returncode != 0:
        raise ToolkitError(f"{transport.name}: cannot create {remote}/out-{kind}: {r.stderr.strip()[-200:]}",
                           hint="check the install directory is writable")
    argv = [RUNNER, "--config", "config.json", "--batch", f"{remote}/list-{kind}.tsv", "--out", f"{remote}/out-{kind}",
            "--threads", str(job.threads or d.threads), "--power-mode", d.power_mode]
    r = transport.run(argv, cwd=f"{root}/current", env={"LD_LIBRARY_PATH": "runtime/lib"}, timeout=job.timeout_s)
    last = [ln for ln in r.stdout.splitlines() if ln.strip()][-1:]
    try:
        summary = json.loads(last[0]) if last else {}
    except ValueError:
        summary = {}
    if r.returncode != 0 and not (r.returncode == 2 and summary.get("batch")):
        tail = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or last or ["(no output)"]
        raise ToolkitError(f"{transport.name}: the runner's verify batch ({kind}) failed (exit status {r.returncode}): {tail[0][:300]}",
                           hint="run the smoke test (`--smoke`) first; the runner's stderr says what it could not do")
    return summary


# ------------------------------------------------------------------ host side and comparisons
def _compare(job: VerifyJob, run: RunDir, samples: dict, outputs: dict) -> dict:
    from toolkit.data.images import read_image
    from toolkit.runtime_parity import cosine, db_boxes, decode, det_input, host_ocr, match_boxes, read_lines, rec_input
    from toolkit.stages.evaluate import infer, predictor

    cfgs = {t: job.sources[t].load_config() for t in job.tasks}
    preds = {t: predictor(run.quant_model(t), threads=job.host_threads) for t in job.tasks if (run.quant_model(t) / "inference.pdmodel").exists()}
    for t in job.tasks:
        if t not in preds:
            raise ToolkitError(f"{run.quant_model(t)}: no exported fake-quant model", hint=f"run `toolkit export --run-dir {run.root}` first")
    fwd = {t: (lambda x, p=p: infer(p, x)) for t, p in preds.items()}
    native = {t: predictor(run.quant_model(t), threads=job.host_threads, optimize=False) for t in preds}
    fwd_native = {t: (lambda x, p=p: infer(p, x)) for t, p in native.items()}
    for f in (fwd, fwd_native):  # det only: rec outputs are too big to keep
        if "det" in f:
            f["det"] = _once(f["det"])
    out: dict = {}
    if samples.get("det") and "det" in outputs:
        cfg = cfgs["det"]
        thresh = float((cfg.get("PostProcess") or {}).get("thresh", 0.3))
        per, host_boxes, dev_boxes, noise = [], [], [], []
        for s in samples["det"]:
            dev = outputs["det"].get(s["id"], {})
            img = read_image(s["image"])
            x, shape = det_input(img, cfg)
            host = fwd["det"](x)[0, 0]
            hb = db_boxes(host, shape, cfg)
            host_boxes.append(hb)
            other = fwd_native["det"](x)[0, 0]
            noise.append((cosine(other, host), float(np.mean((other > thresh) != (host > thresh)))))
            if "error" in dev or "prob_map" not in dev:
                per.append({"id": s["id"], "image": s["image"], "error": dev.get("error", "no output")})
                dev_boxes.append([])
                continue
            m = dev["prob_map"]
            db = [np.asarray(b) for b in dev["boxes"]]
            dev_boxes.append(db)
            same = m.shape == host.shape
            per.append({"id": s["id"], "image": s["image"], "cosine": round(cosine(m, host), 6) if same else None,
                        "flipped": round(float(np.mean((m > thresh) != (host > thresh))), 6) if same else None,
                        "max_abs_diff": round(float(np.abs(m - host).max()), 6) if same else None,
                        "boxes": {"host": len(hb), "device": len(db), "matched": len(match_boxes(hb, db, 0.9).pairs),
                                  "matched_iou_0.5": len(match_boxes(hb, db, 0.5).pairs)}})
        cos = [p["cosine"] for p in per if p.get("cosine") is not None]
        out["det"] = {"images": len(per), "cosine_mean": _mean(cos), "cosine_min": min(cos) if cos else None,
                      "flipped_mean": _mean([p["flipped"] for p in per if p.get("flipped") is not None]),
                      "boxes_matched": sum(p.get("boxes", {}).get("matched", 0) for p in per),
                      "boxes_matched_iou_0.5": sum(p.get("boxes", {}).get("matched_iou_0.5", 0) for p in per),
                      "boxes_host": sum(len(b) for b in host_boxes), "boxes_device": sum(len(b) for b in dev_boxes),
                      "hmean_device": _hmean(dev_boxes, [s["sample"] for s in samples["det"]]),
                      "hmean_host": _hmean(host_boxes, [s["sample"] for s in samples["det"]]),
                      "host_noise": {"cosine_mean": _mean([c for c, _ in noise]), "cosine_min": round(min(c for c, _ in noise), 6),
                                     "flipped_mean": _mean([f for _, f in noise])},
                      "per_image": per}
    if samples.get("rec") and "rec" in outputs:
        cfg = cfgs["rec"]
        per = []
        for s in samples["rec"]:
            dev = outputs["rec"].get(s["id"], {})
            x = rec_input(read_image(s["image"]), cfg)
            host_text, host_score = decode(fwd["rec"](x), cfg)
            per.append({"id": s["id"], "image": s["image"], "label": s["sample"].text, "host": host_text, "device": dev.get("text"),
                        "host_native": decode(fwd_native["rec"](x), cfg)[0],
                        "host_score": round(host_score, 4), "device_score": round(float(dev.get("score", 0.0)), 4),
                        **({"error": dev["error"]} if "error" in dev else {})})
        out["rec"] = {"lines": len(per), "identical": _share(per, "device"),
                      "identical_ignoring_spaces": _share(per, "device", norm=_nospace),
                      "acc_device": _share(per, "device", ref="label"), "acc_host": _share(per, "host", ref="label"),
                      "host_noise": {"identical": _share(per, "host_native"), "identical_ignoring_spaces": _share(per, "host_native", norm=_nospace)},
                      "differ": [p for p in per if p["host"] != p["device"]]}
    if samples.get("pipeline") and "pipeline" in outputs:
        drop = float(json.loads((run.bundle_dir(job.target.name) / "config.json").read_text()).get("rec", {}).get("drop_score", 0.5))
        per, tally, noise, det_part = [], Counter(), Counter(), Counter()
        for s in samples["pipeline"]:
            dev = outputs["pipeline"].get(s["id"], {}).get("lines", [])
            img = read_image(s["image"])
            host = host_ocr(img, fwd["det"], fwd["rec"], cfgs["det"], cfgs["rec"], drop)
            pairs, only_host, only_dev = _pair_lines(host, dev, tally)
            _pair_lines(host, host_ocr(img, fwd_native["det"], fwd_native["rec"], cfgs["det"], cfgs["rec"], drop), noise)
            _pair_lines(host, read_lines(img, [x["box"] for x in dev], fwd["rec"], cfgs["rec"], drop), det_part)
            per.append({"id": s["id"], "image": s["image"], "lines_host": len(host), "lines_device": len(dev),
                        "identical": sum(a == b for a, b in pairs), "differ": [{"host": a, "device": b} for a, b in pairs if a != b][:20],
                        "only_host": only_host[:20], "only_device": only_dev[:20]})
        out["pipeline"] = {"images": len(per), **_agreement(tally), "host_noise": _agreement(noise),
                           "device_boxes_host_rec": _agreement(det_part), "per_image": per}
    return out


def _once(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """`forward` computing each distinct input once: the whole-page samples are the first det
    samples, whose maps the det comparison has already computed."""
    import hashlib

    seen: dict[bytes, np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest() + str(x.shape).encode()
        if key not in seen:
            seen[key] = forward(x)
        return seen[key]

    return run


def _pair_lines(a: list[dict], b: list[dict], tally: Counter) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Two readings of one page paired by box (IoU >= 0.5): the text pairs, the lines only in a and
    only in b; adds the page's lines (the longer reading), same and same-ignoring-spaces to `tally`."""
    from toolkit.runtime_parity import match_boxes

    m = match_boxes([x["box"] for x in a], [y["box"] for y in b], 0.5)
    pairs = [(a[i]["text"], b[j]["text"]) for i, j, _ in m.pairs]
    tally.update(lines=max(len(a), len(b)), same=sum(x == y for x, y in pairs), same_ns=sum(_nospace(x) == _nospace(y) for x, y in pairs))
    return pairs, [a[i]["text"] for i in m.only_a], [b[j]["text"] for j in m.only_b]


def _agreement(tally: Counter) -> dict:
    """Whole-page figures from a `_pair_lines` tally: lines, share identical, share identical ignoring spaces."""
    n = max(tally["lines"], 1)
    return {"lines": tally["lines"], "identical": round(tally["same"] / n, 4), "identical_ignoring_spaces": round(tally["same_ns"] / n, 4)}


def _share(per: list[dict], key: str, ref: str = "host", norm: Callable = lambda t: t) -> float:
    """The share of lines whose `key` reading equals their `ref` (the host's reading, or the label)."""
    return round(sum(norm(p[ref]) == norm(p[key]) for p in per) / max(len(per), 1), 4)


def _nospace(text: str | None) -> str | None:
    return None if text is None else text.replace(" ", "")


def _mean(xs: list) -> float | None:
    return round(float(np.mean(xs)), 6) if xs else None


def _hmean(boxes: list[list], samples: list) -> float:
    """PaddleOCR's DetMetric (IoU 0.5, don't-care regions) of some boxes against the labels."""
    from toolkit.engine import paddle

    paddle()
    from ppocr.metrics.det_metric import DetMetric

    metric = DetMetric()
    for found, s in zip(boxes, samples):
        metric([{"points": np.asarray(found).reshape(-1, 4, 2) if len(found) else np.zeros((0, 4, 2))}],
               [None, None, [[np.asarray(p) for p in s.polys]], [list(s.ignore)]])
    return round(float(metric.get_metric()["hmean"]), 4)


def _failures(job: VerifyJob, res: dict) -> list[str]:
    """One sentence per tolerance missed, naming the samples that differ most."""
    out = []
    det = res.get("det")
    if det and (det["cosine_mean"] is None or det["cosine_mean"] < job.det_cosine_min or any("error" in p for p in det["per_image"])):
        worst = sorted((p for p in det["per_image"]), key=lambda p: p.get("cosine") if p.get("cosine") is not None else -1)[:3]
        out.append(f"det probability-map cosine {det['cosine_mean']} < {job.det_cosine_min}" if det["cosine_mean"] is not None
                   and det["cosine_mean"] < job.det_cosine_min else "det failed on some pages")
        out[-1] += " (worst: " + ", ".join(f"{Path(p['image']).name} {p.get('cosine', p.get('error'))}" for p in worst) + ")"
    rec = res.get("rec")
    if rec and rec["identical"] < job.rec_identical_min:
        out.append(f"rec reads {rec['identical']:.1%} of {rec['lines']} lines as the host does (< {job.rec_identical_min:.0%};"
                   f"{_noise_note(rec)}), e.g. "
                   + ", ".join(f"{Path(p['image']).name}: host {p['host']!r} device {p['device']!r}" for p in rec["differ"][:3]))
    pipe = res.get("pipeline")
    if pipe and job.pipeline_identical_min is not None and pipe["identical"] < job.pipeline_identical_min:
        worst = sorted(pipe["per_image"], key=lambda p: p["identical"] / max(p["lines_host"], p["lines_device"], 1))[:3]
        split = pipe.get("device_boxes_host_rec") or {}
        out.append(f"whole pages: {pipe['identical']:.1%} of {pipe['lines']} lines identical (< {job.pipeline_identical_min:.0%};"
                   f"{_noise_note(pipe)}" + (f"; the host's rec on the device's boxes: {split['identical']:.1%}" if split else "")
                   + "), worst " + ", ".join(Path(p["image"]).name for p in worst))
    return out


def _noise_note(figures: dict) -> str:
    noise = figures.get("host_noise") or {}
    return f" two host implementations of the model agree on {noise['identical']:.1%}" if "identical" in noise else ""
