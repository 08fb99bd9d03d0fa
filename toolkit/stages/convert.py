"""Stage 3: convert inference models to Paddle Lite `.nb` files with `paddle_lite_opt`.

For each target: float and int8 `.nb` of det and rec, with what opt did recorded per model
(size, op list, which ops got int8 kernels, the Lite version in the header). Separately, the
float models are converted for x86 and run with Lite's x86 runtime on a fixed input, so
`evaluate` can show that conversion preserves the network (opt's x86 output vs Paddle
Inference). int8 `.nb` numerics cannot be checked on x86 (Lite's x86 int8 path gives
garbage), so quantized accuracy is measured on the fake-quant model with Paddle Inference.
"""

from __future__ import annotations

import collections
import re
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.digest import fingerprint, hash_json, sha256_file
from toolkit.errors import ToolkitError
from toolkit.jobs import ConvertJob
from toolkit.rundir import RunDir, atomic_write_json
from toolkit.runners.envs import converter_bin
from toolkit.share import PACKAGE
from toolkit.targets import Target
from toolkit.tasks import get_task

PRECISIONS = {"float": "float_model", "int8": "quant_model"}
# Lite's kernel key "op/alias/target/precision/layout"; PrecisionType 1 = kFloat, 2 = kInt8.
_KERNEL = re.compile(rb"([a-z][a-z0-9_]*)/([A-Za-z0-9_]+)/(\d+)/(\d+)/(\d+)")
_PRECISION = {"1": "float", "2": "int8", "4": "any", "3": "int32", "5": "fp16", "7": "int64"}


def inspect_nb(path: Path) -> dict:
    """What a .nb holds: Lite version from the header, kernels picked per op, int8 ops, sha256."""
    data = path.read_bytes()
    if len(data) < 26 or struct.unpack("<H", data[:2])[0] not in (1, 2):
        raise ToolkitError(f"{path} is not a Paddle Lite naive-buffer model (damaged or truncated)",
                           hint="re-run `toolkit convert` for this run directory")
    version = data[2:18].split(b"\0", 1)[0].decode(errors="replace")
    kernels = collections.Counter(
        (m.group(1).decode(), _PRECISION.get(m.group(4).decode(), m.group(4).decode())) for m in _KERNEL.finditer(data))
    ops = collections.Counter()
    int8 = collections.Counter()
    for (op, precision), n in kernels.items():
        ops[op] += n
        if precision == "int8" and op != "calib":
            int8[op] += n
    return {"bytes": len(data), "sha256": sha256_file(path), "lite_version": version, "ops": dict(sorted(ops.items())),
            "int8_ops": sum(int8.values()), "int8_op_types": dict(sorted(int8.items())),
            "calib_ops": kernels.get(("calib", "int8"), 0)}


def run_opt(target: Target, model_dir: Path, out_nb: Path, valid_targets: list[str] | None = None) -> float:
    """paddle_lite_opt in the target's converter environment; returns seconds taken."""
    opt = converter_bin(target, "paddle_lite_opt")
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    prefix = out_nb.with_name("." + out_nb.stem + ".tmp")
    argv = [str(opt), f"--model_file={model_dir / 'inference.pdmodel'}", f"--param_file={model_dir / 'inference.pdiparams'}",
            f"--optimize_out_type={target.opt.optimize_out_type}", f"--optimize_out={prefix}",
            f"--valid_targets={','.join(valid_targets or target.opt.valid_targets)}"]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    secs = time.monotonic() - t0
    produced = prefix.with_name(prefix.name + ".nb")
    if r.returncode != 0 or not produced.exists():
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
        how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
        raise ToolkitError(f"paddle_lite_opt {target.lite.version} failed on {model_dir} ({how})", hint=tail[-800:])
    produced.replace(out_nb)
    return secs


def x86_reference(run: RunDir, target: Target, task: str, shape: tuple[int, ...]) -> dict:
    """Float model -> x86 .nb -> Lite x86 runtime on a fixed input; outputs saved for evaluate."""
    d = run.x86_dir()
    nb = d / f"{task}.float.nb"
    secs = run_opt(target, run.float_model(task), nb, valid_targets=["x86"])
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    np.save(d / f"{task}.in.npy", x)
    runner = PACKAGE / "runners" / "lite_runner.py"
    r = subprocess.run([str(converter_bin(target)), str(runner), str(nb), str(d / f"{task}.in.npy"), str(d / f"{task}.out.npy")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ToolkitError(f"Paddle Lite x86 runtime failed on {nb}", hint=(r.stderr or r.stdout)[-600:])
    return {"nb": str(nb), "opt_seconds": round(secs, 2), "input": str(d / f"{task}.in.npy"), "output": str(d / f"{task}.out.npy")}


def convert(job: ConvertJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: .nb files for every target (and the x86 check), skipped when up to date."""
    results: dict = {"targets": {}}
    inputs = {task: fingerprint([run.float_model(task), run.quant_model(task)]) for task in job.tasks}
    for task in job.tasks:
        for p in (run.float_model(task), run.quant_model(task)):
            if not (p / "inference.pdmodel").exists():
                raise ToolkitError(f"{p}: no exported model", hint=f"run `toolkit export --run-dir {run.root}` first")
    for target in job.targets:
        key = hash_json({"lite": target.lite.model_dump(), "opt": target.opt.model_dump(), "inputs": inputs})

        def work(target=target):
            report: dict = {"target": target.name, "lite_version": target.lite.version, "valid_targets": target.opt.valid_targets}
            outputs = []
            for task in job.tasks:
                report[task] = {}
                for precision, attr in PRECISIONS.items():
                    nb = run.nb(target.name, task, precision)
                    secs = run_opt(target, getattr(run, attr)(task), nb)
                    info = inspect_nb(nb)
                    if info["lite_version"] != target.lite.version:
                        raise ToolkitError(f"{nb}: opt wrote Lite version {info['lite_version']}, the target wants {target.lite.version}",
                                           hint=f"the converter environment does not match targets/{target.name}.yaml; re-run `toolkit setup`")
                    report[task][precision] = {**info, "opt_seconds": round(secs, 2), "path": str(nb.relative_to(run.root))}
                    outputs.append(nb)
                f, q = report[task]["float"], report[task]["int8"]
                report[task]["int8_size_ratio"] = round(q["bytes"] / f["bytes"], 4)
            atomic_write_json(run.convert_report(target.name), report)
            return report, outputs + [run.convert_report(target.name)]

        results["targets"][target.name] = run.run_stage(f"convert:{target.name}", key, work, log)
    if job.x86_check and job.targets:
        t0 = job.targets[0]
        shapes = {task: get_task(task).probe_shape(job.sources[task].load_config()) for task in job.tasks}
        key = hash_json({"lite": t0.lite.version, "inputs": {t: inputs[t] for t in job.tasks}, "shapes": shapes})

        def x86():
            res = {task: x86_reference(run, t0, task, shapes[task]) for task in job.tasks}
            return res, [run.x86_dir()]

        results["x86"] = run.run_stage("convert:x86-check", key, x86, log)
    return results
