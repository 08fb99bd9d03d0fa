"""The files through which a stage runs in another process (a container, a child Python):
RUN/jobs/NAME.job.json goes in, RUN/jobs/NAME.result.json comes out (toolkit/runners/worker.py
reads the one and writes the other)."""

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
