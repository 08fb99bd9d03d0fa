"""Benchmarks of the main job on this machine, printed side by side in one run.

    .venv/bin/python benchmarks/bench.py [--run-dir runs/bench] [--e2e] [--json out.json]

1. The main job end to end (`make demo`'s command): wall time per stage, CPU time of the whole
   process tree and its ratio to wall time (how busy the cores were).
2. QAT throughput on the same global batch: one process pinned to one core vs data-parallel
   ranks on every core (--nproc), det (batch 8 of 320x320 crops) and rec (batch 16 lines).
3. Evaluation cost per det image and per rec line, float and fake-quant (Paddle Inference), and
   the QAT step / search times the main job recorded.
4. Model size: int8 .nb against float .nb per target.
5. Paddle Lite's opt per model.

Figures are measured, never asserted: step times vary +-30% between runs on a shared 2-core
machine, so compare columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main_job(run_dir: Path, fresh: bool) -> dict:
    """`toolkit run` as make demo runs it; cold when --e2e (the run directory is removed first)."""
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    cpu0, t0 = children_cpu(), time.monotonic()
    if fresh or not (run_dir / "report.json").exists():
        subprocess.run([TOOLKIT, "run", "--target", "android-arm64", "--run-dir", str(run_dir)], check=True)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    report = json.loads((run_dir / "report.json").read_text())
    return {"timings": report["timings"], "wall_s": wall, "cpu_s": cpu, "cpu_per_wall": cpu / wall if fresh else None}


def qat_throughput(data: Path, steps: int) -> dict:
    """Images (det) or lines (rec) per second of QAT, one process on one core vs ranks on every core."""
    out = {}
    for task, batch, extra in (("det", 8, ["-O", "Quant.crop_size=320"]), ("rec", 16, [])):
        row = {"batch": batch}
        for name, prefix, nproc in (("one_core", ["taskset", "-c", "0"], "1"), ("all_cores", [], str(os.cpu_count()))):
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if name == "one_core" else {})}
                subprocess.run([*prefix, TOOLKIT, "quantize", "--tasks", task, "--data", str(data), "--run-dir", tmp, "--steps", str(steps),
                                "--batch-size", str(batch), "--no-search", "--nproc", nproc, *extra],
                               check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                secs = [json.loads(line)["seconds"] for line in (Path(tmp) / "quant" / task / "train_log.jsonl").read_text().splitlines()]
            row[name] = batch / statistics.median(secs[1:] or secs)  # the first step builds the graph
        row["speedup"] = row["all_cores"] / row["one_core"]
        out[task] = row
    return out


def ranking(data: Path) -> dict:
    """`toolkit analyze` per task (the search's ranking: every layer fake-quantized alone on the
    probe samples): seconds to prepare (calibrate, export the gated program, float reference) and
    per layer ranked."""
    out = {}
    for task in ("det", "rec"):
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([TOOLKIT, "analyze", "--tasks", task, "--data", str(data), "--run-dir", tmp, "--json"],
                                  check=True, capture_output=True, text=True)
            res = json.loads(proc.stdout)[task]
        out[task] = {"layers": res["layers"], "probe": res["probe_samples"], **res["seconds"]}
    return out


def recorded(run_dir: Path) -> dict:
    """What the main job's stages recorded: eval cost per sample, QAT steps, the search's times."""
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    out: dict = {"eval_ms": {}, "qat": {}}
    for task, m in metrics.items():
        for name, s in m["sets"].items():
            out["eval_ms"][f"{task} {name}"] = {k: s[k]["ms_per_sample"] for k in ("float", "quant")}
        info = json.loads((run_dir / "quant" / task / "qat.json").read_text())
        secs = [json.loads(line)["seconds"] for line in (run_dir / "quant" / task / "train_log.jsonl").read_text().splitlines()]
        search = info.get("search") or {}
        out["qat"][task] = {"steps": len(secs), "step_s": statistics.median(secs), "world": info["settings"]["world_size"],
                            "search_before_s": search.get("seconds_before_training"), "search_after_s": search.get("seconds_after_training"),
                            "float_layers": len(search.get("float_layers") or [])}
    return out


def sizes_and_opt(run_dir: Path) -> dict:
    conv = json.loads((run_dir / "nb" / "android-arm64" / "convert.json").read_text())
    return {task: {p: {"bytes": conv[task][p]["bytes"], "opt_s": conv[task][p]["opt_seconds"]} for p in ("float", "int8")}
            | {"ratio": conv[task]["int8_size_ratio"]} for task in ("det", "rec")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench")
    ap.add_argument("--e2e", action="store_true", help="run the main job cold into --run-dir first (~10 minutes)")
    ap.add_argument("--steps", type=int, default=6, help="QAT steps per throughput measurement")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = {"main_job": main_job(args.run_dir, args.e2e)}
    data = Path(json.loads((args.run_dir / "run.json").read_text())["datasets"][0])
    res["qat_throughput"] = qat_throughput(data, args.steps)
    res["ranking"] = ranking(data)
    res["recorded"] = recorded(args.run_dir)
    res["nb"] = sizes_and_opt(args.run_dir)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    m = res["main_job"]
    print(f"\nBenchmarks on this machine ({os.cpu_count()} cores), run dir {args.run_dir}\n")
    print("1. main job end to end (report.json)        seconds")
    for k, v in m["timings"].items():
        print(f"   {k:<41}{v:>7.1f}")
    if m["cpu_per_wall"] is not None:
        print(f"   CPU time of the process tree {m['cpu_s']:.0f} s in {m['wall_s']:.0f} s wall: {m['cpu_per_wall']:.2f} cores busy on average")
    print("\n2. QAT throughput, same global batch       one process, one core   ranks on every core   speed-up")
    for t, r in res["qat_throughput"].items():
        unit = "images/s" if t == "det" else "lines/s"
        print(f"   {t} (batch {r['batch']})".ljust(43) + f"{r['one_core']:>7.2f} {unit:<14}{r['all_cores']:>8.2f} {unit:<11}{r['speedup']:>6.2f}x")
    print("\n3. evaluation, ms per sample (Paddle Inference)   float     fake-quant")
    for k, v in res["recorded"]["eval_ms"].items():
        print(f"   {k:<46}{v['float']:>7.1f}   {v['quant']:>8.1f}")
    print("   QAT in the main job: " + "; ".join(f"{t} {q['steps']} steps x {q['step_s']:.2f} s ({q['world']} rank(s)), search "
                                                  f"{q['search_before_s'] or 0:.0f} s before + {q['search_after_s'] or 0:.0f} s after, "
                                                  f"{q['float_layers']} layer(s) float" for t, q in res["recorded"]["qat"].items()))
    print("\n4. layer ranking (toolkit analyze)          layers   probe samples   prepare s   s per layer   total s")
    for t, r in res["ranking"].items():
        print(f"   {t:<41}{r['layers']:>6}   {r['probe']:>13}   {r['prepare']:>9.1f}   {r['per_layer']:>11.2f}   {r['total']:>7.1f}")
    print("\n5. android-arm64 .nb                         float MB    int8 MB   int8/float   opt s (float, int8)")
    for t, r in res["nb"].items():
        print(f"   {t:<41}{r['float']['bytes'] / 1e6:>7.2f}   {r['int8']['bytes'] / 1e6:>7.2f}   {r['ratio']:>9.3f}   "
              f"{r['float']['opt_s']:.2f}, {r['int8']['opt_s']:.2f}")


if __name__ == "__main__":
    main()
