"""Stage 4: float vs quantized on every eval split, with Paddle Inference.

The quantized model's accuracy is measured on its fake-quant form: per-channel int8 weights and
per-tensor int8 activations at exactly the points Paddle Lite's ARM int8 kernels quantize, so
this is the accuracy the device will see (toolkit/stages/verify.py checks that on a device).
oneDNN's x86 int8 path is a different implementation and is measured separately by
benchmarks/bench.py. Also checks the x86 float `.nb` outputs from `convert` against Paddle
Inference.

Each dataset's eval split is measured on its own; the verdict (`--max-drop`) is the judged
dataset's (the first real one, else the first), and every set's figures are in the report.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.data.datasets import eval_sets, fingerprint as data_fingerprint, judged, open_datasets
from toolkit.digest import fingerprint, hash_json
from toolkit.errors import ToolkitError
from toolkit.jobs import EvalJob
from toolkit.rundir import RunDir, atomic_write_json, read_json
from toolkit.tasks import get_task

X86_TOLERANCE = 1e-4
MKLDNN_SHAPES = 8
PRECISIONS = ("float", "quant")


def predictor(model_dir: Path, int8: bool = False, threads: int = 0, optimize: bool = True, keep_is_test: bool = False):
    """A Paddle Inference predictor on CPU with oneDNN; `int8` switches on oneDNN's int8 execution
    of a quantized model (the way to serve one on x86). `keep_is_test`: the program's own is_test
    attributes stand (Paddle's pass sets them all, and oneDNN then caches every conv's weights
    after the first run, wrong where a program computes them; see quantize/gated.py)."""
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
        # oneDNN caches kernels per input shape; lines of a hundred widths would hold them all (24 GB
        # on the real-page set, killed by the OOM killer): keep the most recent few.
        cfg.set_mkldnn_cache_capacity(MKLDNN_SHAPES)
        if int8:
            cfg.enable_mkldnn_int8()
        cfg.delete_pass("self_attention_fuse_pass")  # illegal instruction on some x86 CPUs (rec's attention)
        if keep_is_test:
            cfg.delete_pass("is_test_pass")
    else:
        cfg.switch_ir_optim(False)
    try:
        return pi.create_predictor(cfg)
    except Exception as exc:
        raise ToolkitError(f"Paddle Inference cannot load {model_dir}: {str(exc).strip().splitlines()[-1][:200]}") from None


def infer(pred, *inputs: np.ndarray) -> np.ndarray:
    """Feed the inputs in the program's order; the first output."""
    for name, x in zip(pred.get_input_names(), inputs):
        h = pred.get_input_handle(name)
        h.reshape(list(x.shape))
        h.copy_from_cpu(np.ascontiguousarray(x))
    pred.run()
    return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


def x86_check(run: RunDir, task: str) -> dict | None:
    """Max |x86 .nb output - Paddle Inference output| for the float model, if convert made one."""
    d = run.x86_dir()
    inp, outp = d / f"{task}.in.npy", d / f"{task}.out.npy"
    if not (inp.exists() and outp.exists()):
        return None
    ref = infer(predictor(run.float_model(task), optimize=False), np.load(inp))
    lite = np.load(outp)
    if ref.shape != lite.shape:
        raise ToolkitError(f"x86 Lite output shape {lite.shape} differs from Paddle Inference {ref.shape} for {task}")
    diff = float(np.abs(ref - lite).max())
    return {"max_abs_diff": diff, "tolerance": X86_TOLERANCE, "ok": diff <= X86_TOLERANCE}


def measure(task, model_dir: Path, samples: list, cfg: dict, threads: int, progress: Callable[[int, int], None] | None = None) -> dict:
    """The task's metric of one model on some samples, its per-sample predictions and speed."""
    pred = predictor(model_dir, threads=threads)
    t0 = time.perf_counter()
    outs, metas = task.run(lambda x: infer(pred, x), samples, cfg, progress=progress)
    secs = time.perf_counter() - t0
    return {**task.score(outs, samples, cfg, metas), "ms_per_sample": round(1000 * secs / max(len(samples), 1), 2)}


def evaluate(job: EvalJob, run: RunDir, log: Callable[[str], None] | None = None, progress: Callable[[str], Callable] | None = None) -> dict:
    """Entry point: eval/metrics.json; raises when the judged drop exceeds `max_drop` points.
    `progress(description)` gives the callback that follows one model on one set."""
    datasets = open_datasets(job.datasets)
    inputs = {t: models_fingerprint(run, t) for t in job.tasks}
    inputs["x86"] = fingerprint([run.x86_dir()])
    key = hash_json({"tasks": job.tasks, "data": {t: data_fingerprint(t, datasets) for t in job.tasks}, "inputs": inputs,
                     "limit": job.limit, "sources": {t: job.sources[t].fingerprint() for t in job.tasks}})

    def work():
        metrics: dict = {}
        for name in job.tasks:
            task = get_task(name)
            for p in (run.float_model(name), run.quant_model(name)):
                if not (p / "inference.pdmodel").exists():
                    raise ToolkitError(f"{p}: no exported model", hint=f"run `toolkit export --run-dir {run.root}` first")
            cfg = job.sources[name].load_config()
            sets = {}
            for ds, samples in eval_sets(name, datasets, cfg, job.skip_bad_labels, job.limit):
                if log:
                    log(f"evaluate {name}: {len(samples)} samples of {ds.name} ({ds.kind}), float and quantized")
                res = {which: measure(task, d, samples, cfg, job.threads, progress and progress(f"evaluate {name} {ds.name} {which}"))
                       for which, d in (("float", run.float_model(name)), ("quant", run.quant_model(name)))}
                res["drop_points"] = round(100 * (res["float"][task.metric] - res["quant"][task.metric]), 3)
                res["disagreements"] = task.disagreements(samples, res["float"]["predictions"], res["quant"]["predictions"])
                res.update(kind=ds.kind, path=str(ds.path))
                sets[ds.name] = res
            metrics[name] = {"judged": judged(datasets, name).name, "sets": sets, "x86_nb_check": x86_check(run, name),
                             "models": models_digest(inputs[name])}
        atomic_write_json(run.metrics_path(), {**still_valid(run, exclude=job.tasks), **metrics})
        return summarize_metrics(metrics), [run.metrics_path()]

    result = run.run_stage("evaluate", key, work, log)
    check_drops(result, job.max_drop)
    return result


def models_fingerprint(run: RunDir, task: str) -> dict[str, str]:
    return fingerprint([run.float_model(task), run.quant_model(task)])


def models_digest(models: dict[str, str]) -> str:
    """Which float and quantized models (their fingerprint) a task's figures were measured on;
    not their paths, so that a moved run directory keeps its figures."""
    return hash_json(list(models.values()))


def still_valid(run: RunDir, exclude: list[str]) -> dict:
    """The other tasks' entries of eval/metrics.json whose models have not changed since: evaluating
    one task keeps the other's figures rather than dropping them."""
    if not run.metrics_path().exists():
        return {}
    try:
        old = read_json(run.metrics_path(), "eval/metrics.json")
    except ToolkitError:
        return {}
    return {t: m for t, m in old.items() if t not in exclude and isinstance(m, dict) and m.get("models") == models_digest(models_fingerprint(run, t))}


def _figures(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("predictions", "scores")}


def summarize_metrics(metrics: dict) -> dict:
    """The figures report.json carries: the judged set's at the top (metrics.<task>.float.<metric>,
    .quant, .drop_points), every set's under `sets` (per-sample outputs stay in eval/metrics.json)."""
    out = {}
    for task, m in metrics.items():
        sets = {name: {"kind": s["kind"], "float": _figures(s["float"]), "quant": _figures(s["quant"]), "drop_points": s["drop_points"],
                       "disagreements": len(s["disagreements"])} for name, s in m["sets"].items()}
        out[task] = {**sets[m["judged"]], "judged": m["judged"], "sets": sets, "x86_nb_check": m["x86_nb_check"]}
    return out


def check_drops(summary: dict, max_drop: float) -> None:
    summary = {t: r for t, r in summary.items() if isinstance(r, dict)}  # the stage result also says "skipped"
    bad_x86 = [t for t, r in summary.items() if (r.get("x86_nb_check") or {}).get("ok") is False]
    if bad_x86:
        raise ToolkitError(f"conversion changed the network: x86 .nb output differs from Paddle Inference by more than {X86_TOLERANCE} for {', '.join(bad_x86)}",
                           hint="see eval/metrics.json; report the model and Paddle Lite version")
    over = [f"{t} dropped {r['drop_points']:.2f} points on {r['judged']}" for t, r in summary.items() if r["drop_points"] > max_drop]
    if over:
        raise ToolkitError(f"quantization cost too much accuracy: {'; '.join(over)} (allowed: {max_drop})",
                           hint="keep more layers float (--skip-layer), train longer (--steps), or raise --max-drop")
