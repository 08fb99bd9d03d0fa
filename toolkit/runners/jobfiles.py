"""The files through which a stage runs in another process (a container, a child Python, the
ranks of a data-parallel QAT): RUN/jobs/NAME.job.json goes in (`{"stage", "job"}`), and
RUN/jobs/NAME.result.json comes out (`{"result"}` or `{"error": {"message", "hint"}}`).
toolkit/runners/worker.py and the ranks (stages/quantize/distributed.py) read the one and write
the other, here and nowhere else."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.rundir import RunDir, atomic_write_json


def write_job(run: RunDir, stage: str, job) -> tuple[str, Path]:
    """RUN/jobs/NAME.job.json for `stage`; returns NAME and the result file the worker will write."""
    name = f"{stage}-{getattr(job, 'task', 'all')}"
    job_file, result_file = run.job_files(name)
    atomic_write_json(job_file, {"stage": stage, "job": json.loads(job.model_dump_json())})
    result_file.unlink(missing_ok=True)
    return name, result_file


def read_job(run: RunDir, name: str) -> tuple[str, object]:
    """The stage and job model of RUN/jobs/NAME.job.json."""
    from toolkit.jobs import STAGE_JOBS

    envelope = json.loads(run.job_files(name)[0].read_text())
    return envelope["stage"], STAGE_JOBS[envelope["stage"]].model_validate(envelope["job"])


def write_result(result_file: Path, result=None, error: ToolkitError | None = None) -> None:
    atomic_write_json(result_file, {"error": {"message": error.message, "hint": error.hint}} if error else {"result": result})


def read_result(result_file: Path, name: str, where: str, code: int | None, tail: str, prefix: bool = True) -> dict:
    """The worker's result, or its error as a ToolkitError (`where`: the container or process it ran
    in, named before the stage's own message when `prefix`)."""
    try:
        out = json.loads(result_file.read_text())
    except (OSError, ValueError):
        raise ToolkitError(f"{name} failed in {where} (exit code {code}) and wrote no result", hint=tail[-800:] or None) from None
    if "error" in out:
        message = out["error"]["message"]
        raise ToolkitError(f"{name} in {where}: {message}" if prefix else message, hint=out["error"].get("hint"))
    return out["result"]
