"""A stage in another process: `python -m toolkit.runners.worker RUN_DIR NAME`.

The Docker runner (in a container) and the local runner (for stages that run side by side, see
LocalRunner.in_child) write RUN/jobs/NAME.job.json (`{"stage": ..., "job": <the job model's JSON>}`)
and start this; it runs the local stage and writes RUN/jobs/NAME.result.json
(`{"result": ...}` or `{"error": {"message", "hint"}}`; toolkit/runners/jobfiles.py). Nothing is scraped from output: stdout
and stderr are only for people (progress lines).
"""

from __future__ import annotations

import sys

from toolkit.errors import ToolkitError
from toolkit.rundir import RunDir
from toolkit.runners.jobfiles import read_job, write_result


def _progress(desc: str):
    def update(done: int, total: int, loss: float | None = None) -> None:
        if done == total or done % max(1, total // 4) == 0:
            print(f"{desc}: {done}/{total}" + (f" loss {loss:.4f}" if loss is not None else ""), file=sys.stderr, flush=True)

    return update


def _here(job):
    """The job with its model sources resolved in this environment (see ModelSource.relocated)."""
    if getattr(job, "source", None) is not None:
        job = job.model_copy(update={"source": job.source.relocated()})
    if getattr(job, "sources", None):
        job = job.model_copy(update={"sources": {t: s.relocated() for t, s in job.sources.items()}})
    return job


def work(run_dir: str, name: str) -> int:
    from toolkit.runners.local import LocalRunner

    run = RunDir(run_dir, create=False)
    _, result_file = run.job_files(name)
    try:
        stage, job = read_job(run, name)
        job = _here(job)
        local = LocalRunner()
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        if stage == "quantize":
            result = local.quantize(job, run, progress=_progress(f"QAT {job.task}"), log=log)
        elif stage == "evaluate":
            result = local.evaluate(job, run, log, progress=_progress)
        else:
            result = getattr(local, stage)(job, run, log)
        write_result(result_file, result)
        return 0
    except ToolkitError as exc:
        write_result(result_file, error=exc)
        return 2


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    sys.exit(work(sys.argv[1], sys.argv[2]))
