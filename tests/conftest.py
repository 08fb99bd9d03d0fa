"""Shared helpers: run the real `toolkit` console script as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def toolkit(*args, env: dict | None = None, cwd: Path | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run `toolkit ARGS` in a subprocess; returns the completed process (text output)."""
    exe = Path(sys.executable).with_name("toolkit")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "toolkit.cli"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True, env=full_env,
                          cwd=str(cwd or REPO), timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user-facing failure: non-zero exit, an `error:` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert "error:" in proc.stderr, proc.stderr
    for n in needles:
        assert n in proc.stderr, f"{n!r} not in:\n{proc.stderr}"
    assert len(proc.stderr.strip().splitlines()) <= 12, proc.stderr


@pytest.fixture(scope="session")
def zoo_det_dir() -> Path:
    from toolkit.models.sources import ZOO, _rapidocr_dir

    return _rapidocr_dir() / ZOO["ppocrv4-mobile-det"][2]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small synthetic dataset, made once per test session."""
    from toolkit.data.synth import synth_dataset

    out = tmp_path_factory.mktemp("data") / "synth"
    synth_dataset(out, det_train=6, det_eval=4, rec_train=40, rec_eval=20, seed=1)
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
