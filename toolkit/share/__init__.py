"""Where the package data lives: `targets/` and `docker/` sit at the top of the repository and
are mapped into the wheel as `toolkit/share/{targets,docker}` (pyproject.toml), so a source
checkout and a plain `pip install .` find the same files."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent


def _shared(name: str) -> Path:
    for cand in (HERE / name, PACKAGE.parent / name):  # installed wheel, then source checkout
        if cand.is_dir():
            return cand
    return HERE / name


def targets_dir() -> Path:
    """targets/*.yaml: one file per deployment target."""
    return _shared("targets")


def docker_dir() -> Path:
    """docker/: Dockerfiles and the C++ runtime sources."""
    return _shared("docker")


def configs_dir() -> Path:
    """The built-in PaddleOCR-format model configs."""
    return PACKAGE / "models" / "configs"
