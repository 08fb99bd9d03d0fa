"""Benchmarks of the main job on this machine, printed side by side in one run.

    .venv/bin/python benchmarks/bench.py [--run-dir runs/demo] [--json out.json]

1. QAT step time vs float fine-tune step time on the same batch (det and rec).
2. paddle_lite_opt time per model (float and int8, det and rec).
3. Paddle Inference latency on this CPU with oneDNN: float vs quantized with oneDNN's int8
   execution switched on (the only way a fake-quant model is served), plus the accuracy of
   that x86 int8 path on part of the eval set next to the float and fake-quant accuracy.
4. End-to-end time of the main job and of each stage, from the run's report.json
   (`make demo` writes runs/demo; pass --e2e to run it here first).
5. Accuracy search: rec with every layer quantized (the calibrated model before QAT, and with
   --naive a full QAT run with --no-search) next to the automatic float fallback's result,
   and how long `toolkit analyze` takes per task on this CPU.

Figures are measured, never asserted: step times vary +-30% between runs on a shared
2-core machine, so compare columns of one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolkit.engine import paddle  # noqa: E402


def median_time(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_times(data_dir: Path, repeat: int) -> dict:
    """Float fine-tune step vs QAT step, alternating on one batch, for det and rec."""
    pd = paddle()
    from toolkit.data.datasets import training_batches
    from toolkit.models.sources import build_model, resolve_source
    from toolkit.stages.quantize.stage import QuantJob, _freeze_norms, _loss_fn, wrap_qat

    out = {}
    for task in ("det", "rec"):
        src = resolve_source(task, None)
        loaded = build_model(src)
        settings = QuantJob(task=task, source=src, data_dir=data_dir).settings(loaded.config)
        batch = {k: pd.to_tensor(v) for k, v in training_batches(task, data_dir, loaded.config, settings, 0, False)(0).items()}
        teacher = copy.deepcopy(loaded.model)
        teacher.eval()
        fmodel = copy.deepcopy(loaded.model)
        qmodel = loaded.model
        wrap_qat(qmodel, settings, False)
        loss = _loss_fn(task, loaded.config, teacher)
        steps = {}
        for name, model in (("float", fmodel), ("qat", qmodel)):
            _freeze_norms(model)
            opt = pd.optimizer.Adam(learning_rate=1e-6, parameters=[p for p in model.parameters() if not p.stop_gradient])

            def step(model=model, opt=opt):
                loss(model(batch["image"]), batch).backward()
                opt.step()
                opt.clear_grad()

            steps[name] = step
        times = {"float": [], "qat": []}
        for name in ("float", "qat"):
            steps[name]()  # warm-up
        for _ in range(repeat):  # alternate, so both see the same machine load
            for name in ("float", "qat"):
                t0 = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - t0)
        f, q = statistics.median(times["float"]), statistics.median(times["qat"])
        out[task] = {"batch": int(batch["image"].shape[0]), "input": list(batch["image"].shape[1:]), "float_step_s": f, "qat_step_s": q, "ratio": q / f}
    return out


def opt_times(run_dir: Path) -> dict:
    from toolkit.stages.convert import run_opt
    from toolkit.rundir import RunDir
    from toolkit.targets import get_target

    run, target = RunDir(run_dir), get_target("android-arm64")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("det", "rec"):
            for precision, model in (("float", run.float_model(task)), ("int8", run.quant_model(task))):
                out[f"{task}.{precision}"] = run_opt(target, model, Path(tmp) / f"{task}.{precision}.nb")
    return out


def inference(run_dir: Path, repeat: int, subset: dict) -> dict:
    """Latency float vs oneDNN int8, and accuracy of the x86 int8 path on a subset."""
    from toolkit.data import datasets as datamod
    from toolkit.stages.evaluate import eval_det, eval_rec, infer, predictor
    from toolkit.models.sources import load_config, resolve_source
    from toolkit.rundir import RunDir

    run = RunDir(run_dir)
    state = json.loads((run.root / "run.json").read_text())
    out = {}
    for task, shape in (("det", (1, 3, 640, 640)), ("rec", (1, 3, 48, 320))):
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
        row = {"input": list(shape)}
        for name, d, int8 in (("float", run.float_model(task), False), ("int8", run.quant_model(task), True)):
            pred = predictor(d, task, int8)
            row[f"{name}_ms"] = 1000 * median_time(lambda: infer(pred, x), repeat, warmup=3)
        row["speedup"] = row["float_ms"] / row["int8_ms"]
        src = resolve_source(task, state["sources"][task]["spec"], tuple(state["sources"][task]["overrides"]))
        cfg = load_config(src.config, src.overrides)
        samples = datamod.eval_samples(task, Path(state["data_dir"]), cfg, False)[: subset[task]]
        models = {"float": (run.float_model(task), False), "fake-quant": (run.quant_model(task), False), "x86-int8": (run.quant_model(task), True)}
        res = (eval_det if task == "det" else eval_rec)(models, samples, cfg, 0)
        key = "hmean" if task == "det" else "acc"
        row["accuracy"] = {k: res[k][key] for k in models}
        row["accuracy_samples"] = len(samples)
        out[task] = row
    return out


def accuracy_search(run_dir: Path, report: dict, data_dir: Path, naive: bool) -> dict:
    """`toolkit analyze` per task (its timings, and rec's metric with every layer quantized), the
    search's record from quant/rec/qat.json, and with --naive a full QAT of rec with --no-search."""
    toolkit = str(Path(sys.executable).with_name("toolkit"))
    analyses = {}
    for task in ("det", "rec"):
        subprocess.run([toolkit, "analyze", "--tasks", task, "--run-dir", str(run_dir), "--data", str(data_dir), "--json"],
                       check=True, stdout=subprocess.DEVNULL)
        analyses[task] = json.loads((run_dir / "analyze" / task / "sensitivity.json").read_text())
    search = json.loads((run_dir / "quant" / "rec" / "qat.json").read_text())["search"]
    out = {"naive_calibrated_drop": analyses["rec"]["full_quant_drop_points"], "search_final_drop": search["final_drop_points"],
           "eval_drop": report["metrics"]["rec"]["drop_points"], "float_layers": search["float_layers"],
           "float_extra_kb": search["float_extra_bytes"] / 1e3,
           "analyze_s": {t: {"layers": a["layers"], **a["seconds"]} for t, a in analyses.items()}}
    if naive:
        with tempfile.TemporaryDirectory() as tmp:
            for args in (["quantize", "--no-search"], ["export"], ["evaluate", "--max-drop", "100", "--json"]):
                proc = subprocess.run([toolkit, *args, "--tasks", "rec", "--run-dir", tmp, *(["--data", str(data_dir)] if args[0] != "export" else [])],
                                      check=True, capture_output=True, text=True)
            out["naive_qat_eval_drop"] = json.loads(proc.stdout)["rec"]["drop_points"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--e2e", action="store_true", help="run the main job (make demo's command) into --run-dir first")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--naive", action="store_true", help="also QAT rec with every layer quantized (--no-search): ~5 more minutes")
    args = ap.parse_args()
    if args.e2e or not (args.run_dir / "report.json").exists():
        toolkit = Path(sys.executable).with_name("toolkit")
        print(f"running the main job into {args.run_dir} ...", file=sys.stderr)
        subprocess.run([str(toolkit), "run", "--target", "android-arm64", "--run-dir", str(args.run_dir)], check=True)
    report = json.loads((args.run_dir / "report.json").read_text())
    data_dir = Path(json.loads((args.run_dir / "run.json").read_text())["data_dir"])
    res = {"steps": step_times(data_dir, args.repeat), "opt_s": opt_times(args.run_dir),
           "inference": inference(args.run_dir, max(args.repeat * 2, 10), {"det": 20, "rec": 100}),
           "e2e": {"total_s": report["timings"].get("total"), "stages_s": report["timings"]},
           "search": accuracy_search(args.run_dir, report, data_dir, args.naive)}
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    print(f"\nBenchmarks on this machine ({__import__('os').cpu_count()} cores), run dir {args.run_dir}\n")
    print("1. training step, same batch (median)      float fine-tune    QAT      QAT/float")
    for t, r in res["steps"].items():
        print(f"   {t} batch {r['batch']} x {r['input']}".ljust(44) + f"{r['float_step_s']:>8.2f} s {r['qat_step_s']:>8.2f} s {r['ratio']:>8.2f}x")
    print("\n2. paddle_lite_opt (android-arm64)          seconds")
    for k, v in res["opt_s"].items():
        print(f"   {k:<41}{v:>6.2f}")
    print("\n3. Paddle Inference, oneDNN, batch 1       float      int8 (oneDNN)  speed-up")
    for t, r in res["inference"].items():
        print(f"   {t} {r['input']}".ljust(43) + f"{r['float_ms']:>7.1f} ms {r['int8_ms']:>9.1f} ms {r['speedup']:>8.2f}x")
    print("\n   accuracy on the first N eval samples     float     fake-quant (= ARM int8)   x86 oneDNN int8")
    for t, r in res["inference"].items():
        a = r["accuracy"]
        print(f"   {t} ({'hmean' if t == 'det' else 'acc'}, N={r['accuracy_samples']})".ljust(43) + f"{a['float']:.4f}    {a['fake-quant']:.4f}                    {a['x86-int8']:.4f}")
    print("\n4. main job end to end (report.json)        seconds")
    for k, v in res["e2e"]["stages_s"].items():
        print(f"   {k:<41}{v:>7.1f}")
    s = res["search"]
    print("\n5. rec accuracy (line acc, points of drop)   every layer int8          automatic float fallback")
    print(f"   held-out search set (calibrated / QAT)    {s['naive_calibrated_drop']:>6.2f}                    {s['search_final_drop']:>6.2f} (after QAT)")
    naive = f"{s['naive_qat_eval_drop']:>6.2f}" if s.get("naive_qat_eval_drop") is not None else "   n/a (--naive)"
    print(f"   eval split, after QAT                     {naive}                    {s['eval_drop']:>6.2f}")
    print(f"   layers kept float: {len(s['float_layers'])} ({s['float_extra_kb']:.1f} kB more .nb): {', '.join(s['float_layers'])}")
    for t, a in s["analyze_s"].items():
        print(f"   toolkit analyze {t}: {a['layers']} layers in {a['total']:.0f} s ({a['per_layer']:.2f} s per layer, {a['prepare']:.0f} s to prepare)")


if __name__ == "__main__":
    main()
