"""The tasks: `get_task("det")` / `get_task("rec")`. See toolkit/tasks/base.py."""

from __future__ import annotations

from toolkit.errors import ToolkitError
from toolkit.tasks.base import Task


def get_task(name: str) -> Task:
    from toolkit.tasks.det import DetTask
    from toolkit.tasks.rec import RecTask

    tasks = {"det": DetTask, "rec": RecTask}
    if name not in tasks:
        raise ToolkitError(f"unknown task {name!r}", hint="use det, rec or det,rec")
    return tasks[name]()


def parse_tasks(spec: str) -> list[str]:
    """`det,rec` -> ["det", "rec"]: the --tasks option."""
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("det", "rec")]
    if bad or not tasks:
        raise ToolkitError(f"--tasks {spec}: unknown task {', '.join(bad) or '(none)'}", hint="use det, rec or det,rec")
    return list(dict.fromkeys(tasks))
