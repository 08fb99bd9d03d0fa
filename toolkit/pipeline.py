"""`toolkit run`: every stage in order for one or more targets, in one run directory.

Each stage is the same entry point the single-stage commands call, so `toolkit run` and
`toolkit quantize; toolkit export; ...` produce the same files, and a second `toolkit run`
with unchanged inputs skips every stage. report.json and report.html are written at the end,
also when a stage fails.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
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


def train_and_export(job: RunJob, run: RunDir, runner, datasets: list[Path], ui, timed) -> None:
    """quantize then export, for each task. With the local runner, more than one task, a core for
    each and no data-parallel job, each task's pair runs in a child process of its own with its
    share of the cores: eager Paddle keeps about one core busy, so det trains while rec does
    (same results as one after the other). A task that fails does not stop the others, whose
    work is kept; the first failure is raised when all have ended."""
    from toolkit.stages.quantize.train import TrainLogFollower

    jobs = {task: plan(job.quant_job(task, datasets)) for task in job.tasks}
    cores = os.cpu_count() or 1
    export_job = lambda t: ExportJob(task=t, source=job.sources[t])  # noqa: E731
    if not hasattr(runner, "in_child") or len(jobs) < 2 or cores < 2 or any(q.dist for q in jobs.values()):
        for task, q in jobs.items():
            timed(f"quantize:{task}", lambda q=q: runner.quantize(q, run, progress=ui.progress(f"{job.quant.method.upper()} {q.task}"), log=None))
            timed(f"export:{task}", lambda t=task: runner.export(export_job(t), run))
        return
    threads = max(1, cores // len(jobs))
    followers = {t: TrainLogFollower(q, run, ui.progress(f"QAT {t}")) for t, q in jobs.items() if q.options.method == "qat"}
    announced: set[str] = set()

    def poll() -> None:
        for t, f in followers.items():
            f.poll()
            if f.finished and t not in announced:  # else the bar sits at 100% for the check and export
                announced.add(t)
                ui.log(f"{t}: training done; the check of the trained model and export follow (output in {run.job_log('*').parent})")

    def pair(task: str, q) -> dict:
        try:
            return {"quantize": timed(f"quantize:{task}", lambda: runner.in_child("quantize", q, run, threads)),
                    "export": timed(f"export:{task}", lambda: runner.in_child("export", export_job(task), run, threads))}
        except ToolkitError as exc:
            ui.log(f"{task}: failed ({exc.message.splitlines()[0]}); the other tasks go on")
            raise

    def side_by_side() -> dict:
        ui.log(f"quantize+export: {', '.join(jobs)} side by side, a process each with {threads} thread(s); "
               f"their output in {run.job_log('*').parent}")
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(pair, t, q) for t, q in jobs.items()]
            try:
                while not all(f.done() for f in futures):
                    poll()
                    time.sleep(0.5)
            except BaseException:
                runner.stop_children()
                raise
        for f in followers.values():
            f.poll()
        return {t: f.result() for t, f in zip(jobs, futures)}

    timed("quantize+export", side_by_side)  # the wall time of the whole (the stages' own times overlap)


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
        train_and_export(job, run, runner, datasets, ui, timed)
        timed("convert", lambda: runner.convert(ConvertJob(targets=job.targets, sources=job.sources, tasks=job.tasks), run))
        timed("evaluate", lambda: runner.evaluate(EvalJob(sources=job.sources, datasets=datasets, tasks=job.tasks, max_drop=job.quant.max_drop,
                                                          skip_bad_labels=job.quant.skip_bad_labels), run, ui.log,
                                                          progress=ui.progress))
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
