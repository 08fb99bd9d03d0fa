"""Stage 4: evaluate float vs quantized on the eval split with Paddle Inference.

Metrics are PaddleOCR's own classes: DetMetric (IoU 0.5, don't-care regions) after
DBPostProcess, and RecMetric (line accuracy ignoring spaces, normalized edit distance)
after CTCLabelDecode.

The quantized model's accuracy is measured on its fake-quant form: per-channel int8
weights and per-tensor int8 activations at exactly the points Paddle Lite's ARM int8
kernels quantize, so this is the accuracy the device will see. oneDNN's x86 int8 path is
a different int8 implementation (it re-quantizes further ops with its own scales) and is
measured separately by benchmarks/bench.py; that is also the only way a fake-quant model
is ever *served* on x86 (without the int8 switch it runs 7-12x slower than float).
Also checks the x86 `.nb` outputs from `convert` against Paddle Inference.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.data import datasets as datamod
from toolkit.errors import ToolkitError
from toolkit.models.sources import TASKS, ModelSource, load_config
from toolkit.rundir import RunDir, atomic_write_json, fingerprint, stage_key

X86_TOLERANCE = 1e-4


@dataclass
class EvalJob:
    sources: dict[str, ModelSource]
    data_dir: Path
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    max_drop: float = 1.0                  # points (percent) of hmean / accuracy
    threads: int = 0                       # 0: all cores
    skip_bad_labels: bool = False
    limit: int | None = None               # evaluate only the first N samples (quick looks)


def predictor(model_dir: Path, task: str, int8: bool, threads: int = 0, optimize: bool = True):
    """A Paddle Inference predictor on CPU with oneDNN; `int8` switches on oneDNN's int8 execution
    of a quantized model (the way to serve one on x86)."""
    from toolkit.engine import paddle

    paddle()
    import paddle.inference as pi

    cfg = pi.Config(str(model_dir / "inference.pdmodel"), str(model_dir / "inference.pdiparams"))
    cfg.disable_gpu()
    cfg.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
    cfg.disable_glog_info()
    if optimize:
        cfg.switch_ir_optim(True)
        cfg.enable_mkldnn()
        if int8:
            cfg.enable_mkldnn_int8()
        if task == "rec":
            cfg.delete_pass("self_attention_fuse_pass")  # illegal instruction on some x86 CPUs
    else:
        cfg.switch_ir_optim(False)
    try:
        return pi.create_predictor(cfg)
    except Exception as exc:
        raise ToolkitError(f"Paddle Inference cannot load {model_dir}: {str(exc).strip().splitlines()[-1][:200]}") from None


def infer(pred, x: np.ndarray) -> np.ndarray:
    h = pred.get_input_handle(pred.get_input_names()[0])
    h.reshape(list(x.shape))
    h.copy_from_cpu(np.ascontiguousarray(x))
    pred.run()
    return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


def det_postprocess(cfg: dict):
    from ppocr.postprocess.db_postprocess import DBPostProcess

    pp = dict(cfg.get("PostProcess") or {})
    pp.pop("name", None)
    return DBPostProcess(**pp)


def eval_det(models: dict[str, Path], samples, cfg: dict, threads: int) -> dict:
    """hmean/precision/recall per model, per-image boxes, and latency."""
    from ppocr.metrics.det_metric import DetMetric

    post = det_postprocess(cfg)
    out: dict = {}
    for name, (model_dir, int8) in models.items():
        pred = predictor(model_dir, "det", int8, threads)
        metric = DetMetric()
        times, boxes = [], []
        for s in samples:
            img = datamod.read_image(s.image)
            x, shape = datamod.det_input(img, cfg)
            t0 = time.perf_counter()
            prob = infer(pred, x)
            times.append(time.perf_counter() - t0)
            found = post({"maps": prob}, shape)[0]["points"]
            boxes.append([np.asarray(b).tolist() for b in found])
            metric([{"points": found}], [None, None, [[np.asarray(p) for p in s.polys]], [list(s.ignore)]])
        m = metric.get_metric()
        out[name] = {"hmean": float(m["hmean"]), "precision": float(m["precision"]), "recall": float(m["recall"]),
                     "images": len(samples), "latency_ms_median": round(1000 * statistics.median(times), 2), "boxes": boxes}
    return out


def eval_rec(models: dict[str, Path], samples, cfg: dict, threads: int, batch_size: int = 32) -> dict:
    """Line accuracy / normalized edit distance per model, the texts read, and latency per line."""
    from ppocr.metrics.rec_metric import RecMetric

    from toolkit.models.sources import ctc_decoder

    decode = ctc_decoder(cfg)
    images = [datamod.read_image(s.image) for s in samples]
    widths = [datamod.rec_width(im, 48, 48 * 25) for im in images]
    order = sorted(range(len(samples)), key=lambda i: widths[i])  # PaddleOCR batches similar widths
    out: dict = {}
    for name, (model_dir, int8) in models.items():
        pred = predictor(model_dir, "rec", int8, threads)
        metric = RecMetric(ignore_space=bool((cfg.get("Metric") or {}).get("ignore_space", True)))
        texts: list[str] = [""] * len(samples)
        secs = 0.0
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            # Few distinct input shapes: oneDNN builds its kernels once per shape, which costs
            # seconds, so widths are padded to multiples of 160 and the last batch filled up.
            width = max(320, -(-max(widths[i] for i in idx) // 160) * 160)
            x = np.zeros((batch_size, 3, 48, width), dtype="float32")
            for j, i in enumerate(idx):
                x[j] = datamod.rec_input(images[i], widths[i], 48, width)
            t0 = time.perf_counter()
            probs = infer(pred, x)[: len(idx)]
            secs += time.perf_counter() - t0
            for i, (text, _) in zip(idx, decode(probs)):
                texts[i] = text
        metric([[(t, 1.0) for t in texts], [(s.text, 1.0) for s in samples]])
        m = metric.get_metric()
        out[name] = {"acc": float(m["acc"]), "norm_edit_dis": float(m["norm_edit_dis"]), "lines": len(samples),
                     "latency_ms_per_line": round(1000 * secs / max(len(samples), 1), 3), "texts": texts}
    return out


def x86_check(run: RunDir, task: str) -> dict | None:
    """Max |x86 .nb output - Paddle Inference output| for the float model, if convert made one."""
    d = run.nb_dir("x86")
    inp, outp = d / f"{task}.in.npy", d / f"{task}.out.npy"
    if not (inp.exists() and outp.exists()):
        return None
    ref = infer(predictor(run.float_model(task), task, int8=False, optimize=False), np.load(inp))
    lite = np.load(outp)
    if ref.shape != lite.shape:
        raise ToolkitError(f"x86 Lite output shape {lite.shape} differs from Paddle Inference {ref.shape} for {task}")
    diff = float(np.abs(ref - lite).max())
    return {"max_abs_diff": diff, "tolerance": X86_TOLERANCE, "ok": diff <= X86_TOLERANCE}


def evaluate(job: EvalJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: eval/metrics.json; raises when a drop exceeds `max_drop` points."""
    inputs = {t: fingerprint([run.float_model(t), run.quant_model(t)]) for t in job.tasks}
    inputs["x86"] = fingerprint([run.nb_dir("x86")])
    key = stage_key(tasks=job.tasks, data={t: datamod.fingerprint(t, job.data_dir) for t in job.tasks}, inputs=inputs,
                    limit=job.limit, sources={t: job.sources[t].fingerprint() for t in job.tasks})

    def work():
        from toolkit.engine import paddle

        paddle()  # puts ppocr (metrics, post-processing) on the path
        metrics: dict = {}
        for task in job.tasks:
            for p in (run.float_model(task), run.quant_model(task)):
                if not (p / "inference.pdmodel").exists():
                    raise ToolkitError(f"{p}: no exported model", hint=f"run `toolkit export --run-dir {run.root}` first")
            cfg = load_config(job.sources[task].config, job.sources[task].overrides)
            samples = datamod.eval_samples(task, job.data_dir, cfg, job.skip_bad_labels)[: job.limit or None]
            models = {"float": (run.float_model(task), False), "quant": (run.quant_model(task), False)}
            res = (eval_det if task == "det" else eval_rec)(models, samples, cfg, job.threads)
            key_metric = "hmean" if task == "det" else "acc"
            res["drop_points"] = round(100 * (res["float"][key_metric] - res["quant"][key_metric]), 3)
            res["disagreements"] = _disagreements(task, samples, res)
            res["x86_nb_check"] = x86_check(run, task)
            metrics[task] = res
        atomic_write_json(run.eval_dir() / "metrics.json", metrics)
        return summarize_metrics(metrics), [run.eval_dir() / "metrics.json"]

    result = run.run_stage("evaluate", key, work, log)
    check_drops(result, job.max_drop)
    return result


def summarize_metrics(metrics: dict) -> dict:
    """The figures report.json carries (per-sample texts and boxes stay in eval/metrics.json)."""
    out = {}
    for task, res in metrics.items():
        out[task] = {"float": {k: v for k, v in res["float"].items() if k not in ("texts", "boxes")},
                     "quant": {k: v for k, v in res["quant"].items() if k not in ("texts", "boxes")},
                     "drop_points": res["drop_points"], "x86_nb_check": res["x86_nb_check"],
                     "disagreements": len(res["disagreements"])}
    return out


def _disagreements(task: str, samples, res: dict) -> list[dict]:
    """Samples where float and quantized outputs differ: what a person would look at first."""
    out = []
    if task == "rec":
        for s, f, q in zip(samples, res["float"]["texts"], res["quant"]["texts"]):
            if f != q:
                out.append({"image": str(s.image), "label": s.text, "float": f, "quant": q})
    else:
        for i, (s, f, q) in enumerate(zip(samples, res["float"]["boxes"], res["quant"]["boxes"])):
            if len(f) != len(q):
                out.append({"index": i, "image": str(s.image), "gt_boxes": len(s.polys), "float_boxes": len(f), "quant_boxes": len(q)})
    return out


def check_drops(summary: dict, max_drop: float) -> None:
    over = [f"{t} dropped {r['drop_points']:.2f} points" for t, r in summary.items() if isinstance(r, dict) and "drop_points" in r and r["drop_points"] > max_drop]
    bad_x86 = [t for t, r in summary.items() if isinstance(r, dict) and r.get("x86_nb_check") and not r["x86_nb_check"]["ok"]]
    if bad_x86:
        raise ToolkitError(f"conversion changed the network: x86 .nb output differs from Paddle Inference by more than {X86_TOLERANCE} for {', '.join(bad_x86)}",
                           hint="see eval/metrics.json; report the model and Paddle Lite version")
    if over:
        raise ToolkitError(f"quantization cost too much accuracy: {'; '.join(over)} (allowed: {max_drop})",
                           hint="keep more layers float (--skip-layer), train longer (--steps), or raise --max-drop")
