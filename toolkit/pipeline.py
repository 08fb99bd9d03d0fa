"""`toolkit run`: every stage in order for one or more targets, in one run directory.

Each stage is the same entry point the single-stage commands call, so `toolkit run` and
`toolkit quantize; toolkit export; ...` produce the same files, and a second `toolkit run`
with unchanged inputs skips every stage.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.report import summary as reportmod
from toolkit.stages.bundle import BundleJob, bundle
from toolkit.stages.convert import ConvertJob, convert
from toolkit.errors import ToolkitError
from toolkit.stages.evaluate import EvalJob, evaluate
from toolkit.stages.export import ExportJob, export
from toolkit.models.sources import ModelSource
from toolkit.stages.quantize.stage import QuantJob, quantize
from toolkit.rundir import RunDir
from toolkit.targets import Target

# Sizes of the synthetic data the main job makes when no --data is given: held-out sets of
# 100 det images and 500 rec lines, as the acceptance criteria ask.
DEFAULT_SYNTH = {"det_train": 40, "det_eval": 100, "rec_train": 800, "rec_eval": 500}


@dataclass
class RunJob:
    targets: list[Target]
    sources: dict[str, ModelSource]
    data_dir: Path | None = None
    tasks: list[str] = field(default_factory=lambda: ["det", "rec"])
    method: str = "qat"
    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    skip_layers: dict[str, list[str]] = field(default_factory=dict)
    pact: bool | None = None
    resume: bool = False
    seed: int = 0
    device: str = "cpu"
    max_drop: float = 1.0
    search: bool = True                 # automatic float fallback within max_drop during QAT
    skip_bad_labels: bool = False
    synth: dict = field(default_factory=lambda: dict(DEFAULT_SYNTH))
    runner: str = "local"               # local | docker | auto (toolkit/runners.py)
    command: list[str] = field(default_factory=lambda: list(sys.argv))


def ensure_data(run: RunDir, data_dir: Path | None, synth: dict, seed: int, log: Callable[[str], None]) -> Path:
    """The user's data dir, or synthetic data made once into RUN/data."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise ToolkitError(f"--data {data_dir}: no such directory", hint="give a folder with det/{train,eval}.txt and rec/{train,eval}.txt")
        return Path(data_dir)
    from toolkit.data.synth import synth_dataset

    log(f"data: synthesising {synth} into {run.data()}")
    synth_dataset(run.data(), seed=seed, progress=None, **synth)
    return run.data()


def _all_skipped(result) -> bool:
    """True when a stage result (or every per-target result inside it) was skipped."""
    if not isinstance(result, dict) or not result:
        return False
    if "skipped" in result:
        return bool(result["skipped"])
    return all(_all_skipped(v) for v in result.values())


def run_all(job: RunJob, run: RunDir, ui) -> dict:
    """All stages; returns report.json's content (also written when a stage fails)."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    error: ToolkitError | None = None
    try:
        def timed(name, fn):
            ui.log(f"{name}: ...")
            s = time.monotonic()
            out = fn()
            timings[name] = round(time.monotonic() - s, 2)
            ui.log(f"{name}: {'skipped (up to date)' if _all_skipped(out) else 'done'} in {timings[name]:.1f}s")
            return out

        from toolkit.runners import get_runner

        runner = get_runner(job.runner, ui.log)
        data_dir = timed("data", lambda: ensure_data(run, job.data_dir, job.synth, job.seed, ui.log))
        for task in job.tasks:
            qjob = QuantJob(task=task, source=job.sources[task], data_dir=data_dir, method=job.method, steps=job.steps,
                            batch_size=job.batch_size, learning_rate=job.learning_rate, skip_layers=job.skip_layers.get(task, []),
                            pact=job.pact, resume=job.resume, seed=job.seed, device=job.device, skip_bad_labels=job.skip_bad_labels,
                            max_drop=job.max_drop if job.search and job.method == "qat" else None)
            timed(f"quantize:{task}", lambda q=qjob: runner.quantize(q, run, progress=ui.progress(f"QAT {task}"), log=None))
            timed(f"export:{task}", lambda t=task: runner.export(ExportJob(t, job.sources[t]), run))
        timed("convert", lambda: runner.convert(ConvertJob(job.targets, job.tasks), run))
        timed("evaluate", lambda: runner.evaluate(EvalJob(job.sources, data_dir, job.tasks, job.max_drop, skip_bad_labels=job.skip_bad_labels), run))
        timed("bundle", lambda: bundle(BundleJob(job.targets, job.sources, data_dir, job.tasks, job.command), run))
    except ToolkitError as exc:
        error = exc
    timings["total"] = round(time.monotonic() - t0, 2)
    report = reportmod.write_report(run, job.targets, job.tasks, timings, job.command, error)
    if error is not None:
        raise error
    return report
