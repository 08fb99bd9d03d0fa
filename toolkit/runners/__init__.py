"""Where the stages run: `local` (this Python and the converter venv) or `docker` (the images
built from docker/). Both take the same jobs and return the same results."""

from __future__ import annotations

from typing import Callable

from toolkit.errors import ToolkitError

RUNNERS = ("local", "docker", "auto")


def _quiet(_msg: str) -> None:
    pass


def get_runner(name: str, log: Callable[[str], None] | None = None, device: str = "cpu"):
    """local, docker, or auto (Docker when an engine answers, else local)."""
    if name not in RUNNERS:
        raise ToolkitError(f"--runner {name}: unknown runner", hint="use local, docker or auto")
    if name == "local":
        return _local()
    if name == "auto":
        from toolkit.runners.images import engine_answers

        if not engine_answers():
            (log or _quiet)("runner auto: no Docker engine answers, running locally")
            return _local()
        (log or _quiet)("runner auto: a Docker engine answers, running in containers")
    from toolkit.runners.docker import DockerRunner

    return DockerRunner(log=log)


def _local():
    from toolkit.runners.local import LocalRunner

    return LocalRunner()
