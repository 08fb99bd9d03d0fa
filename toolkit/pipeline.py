"""`toolkit run`: every stage in order for one or more targets, in one run directory.

Each stage is the same entry point the single-stage commands call, so `toolkit run` and
`toolkit quantize; toolkit export; ...` produce the same files, and a second `toolkit run`
with unchanged inputs skips every stage. report.json and report.html are written at the end,
also when a stage fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.jobs import BundleJob, ConvertJob, DeployJob, EvalJob, ExportJob, RunJob
from toolkit.report.summary import write_report
from toolkit.rundir import RunDir
from toolkit.runners import get_runner
from toolkit.stages.bundle import bundle
from toolkit.stages.quantize.stage import plan

# The main job's synthetic set when no --data is given: held-out sets of 100 det images and 500
# rec lines; the real-document set beside it is what the verdict is judged on.
DEFAULT_SYNTH = {"det_train": 40, "det_eval": 100, "rec_train": 800, "rec_eval": 500}


def main_datasets(run: RunDir, seed: int, log) -> list[Path]:
    """Synthetic data and real document pages, made once into RUN/data/{synth,real}."""
    from toolkit.data.realpages import build_real_pages
    from toolkit.data.synth import synth_dataset
    from toolkit.runners.envs import toolkit_home

    log(f"data: synthesising {DEFAULT_SYNTH} into {run.dataset('synth')}")
    synth_dataset(run.dataset("synth"), seed=seed, progress=None, **DEFAULT_SYNTH)
    log(f"data: real document pages into {run.dataset('real')}")
    build_real_pages(run.dataset("real"), toolkit_home() / "downloads")
    return [run.dataset("synth"), run.dataset("real")]


def _all_skipped(result) -> bool:
    """True when a stage result (or every per-target result inside it) was skipped."""
    if not isinstance(result, dict) or not result:
        return False
    if "skipped" in result:
        return bool(result["skipped"])
    return all(_all_skipped(v) for v in result.values())


def run_all(job: RunJob, run: RunDir, ui, deploy_to: str | None = None) -> dict:
    """All stages; returns report.json's content."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    error: ToolkitError | None = None

    def timed(name, fn):
        ui.log(f"{name}: ...")
        s = time.monotonic()
        out = fn()
        timings[name] = round(time.monotonic() - s, 2)
        ui.log(f"{name}: {'skipped (up to date)' if _all_skipped(out) else 'done'} in {timings[name]:.1f}s")
        return out

    try:
        runner = get_runner(job.runner, ui.log)
        datasets = timed("data", lambda: job.datasets or main_datasets(run, job.quant.seed, ui.log))
        run.update_state(datasets=[str(p) for p in datasets])
        for task in job.tasks:
            qjob = plan(job.quant_job(task, datasets))
            timed(f"quantize:{task}", lambda q=qjob: runner.quantize(q, run, progress=ui.progress(f"{job.quant.method.upper()} {q.task}"), log=None))
            timed(f"export:{task}", lambda t=task: runner.export(ExportJob(task=t, source=job.sources[t]), run))
        timed("convert", lambda: runner.convert(ConvertJob(targets=job.targets, sources=job.sources, tasks=job.tasks), run))
        timed("evaluate", lambda: runner.evaluate(EvalJob(sources=job.sources, datasets=datasets, tasks=job.tasks, max_drop=job.quant.max_drop,
                                                          skip_bad_labels=job.quant.skip_bad_labels), run, ui.log))
        timed("bundle", lambda: bundle(BundleJob(targets=job.targets, sources=job.sources, datasets=datasets, tasks=job.tasks,
                                                 command=job.command), run))
        if deploy_to:
            from toolkit.stages.deploy import deploy

            timed("deploy", lambda: deploy(DeployJob(target=job.targets[0], device=deploy_to), run))
    except ToolkitError as exc:
        error = exc
    timings["total"] = round(time.monotonic() - t0, 2)
    report = write_report(run, job.targets, job.tasks, timings, job.command, error)
    if error is not None:
        raise error
    return report
