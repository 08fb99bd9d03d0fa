"""Engine environments: where the converter (paddle_lite_opt + Lite's Python runtime) runs.

The paddlelite wheel is a pybind11 module built for one Python version (2.12: cp37 only),
so it lives in its own virtual environment, one per Lite version, under TOOLKIT_HOME
(default ~/.cache/toolkit). `toolkit setup` creates it; the Docker runner uses the
converter image instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.targets import Target


def child_python_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python that imports this toolkit (a stage worker, a
    QAT rank): the package's parent first on PYTHONPATH, then `extra`."""
    from toolkit.share import PACKAGE

    path = [str(PACKAGE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **extra}


def toolkit_home() -> Path:
    return Path(os.environ.get("TOOLKIT_HOME", Path.home() / ".cache" / "toolkit"))


def converter_dir(lite_version: str) -> Path:
    return toolkit_home() / "envs" / f"paddlelite-{lite_version}"


# Lite version -> a folder of stand-ins for the converter venv's programs. The Docker runner
# (toolkit/runners.py) points it at programs that run opt in the converter image.
CONVERTER_OVERRIDE: dict[str, Path] = {}


def converter_bin(target: Target, name: str = "python") -> Path:
    """A program of the target's converter venv; a clear error when the venv is missing."""
    if target.lite.version in CONVERTER_OVERRIDE:
        return CONVERTER_OVERRIDE[target.lite.version] / name
    path = converter_dir(target.lite.version) / "bin" / name
    if not (path.parent.parent / ".ready").exists():
        raise ToolkitError(
            f"the Paddle Lite {target.lite.version} converter environment is not set up ({path} missing)",
            hint="run `toolkit setup` (needs a Python " + target.lite.python + " interpreter), or use --runner docker",
        )
    return path


def find_python(version: str) -> Path | None:
    """A working interpreter of `version` (e.g. "3.7"): pyenv's, then PATH's (a pyenv shim
    on PATH may exist and still refuse to run, so each candidate is tried)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" / "python")), reverse=True)
    if shutil.which(f"python{version}"):
        candidates.append(shutil.which(f"python{version}"))
    for exe in candidates:
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == version:
            return Path(exe)
    return None


def ensure_converter(target: Target, log=print) -> Path:
    """Create the converter venv for the target's Lite version if missing; returns its python.

    A `.ready` marker is written last, so an interrupted set-up is redone, never half-used.
    """
    d = converter_dir(target.lite.version)
    py = d / "bin" / "python"
    if (d / ".ready").exists():
        return py
    base = find_python(target.lite.python)
    if base is None:
        raise ToolkitError(
            f"Paddle Lite {target.lite.version} needs Python {target.lite.python}, and none was found",
            hint=f"install python{target.lite.python} (e.g. `pyenv install {target.lite.python}`), or use --runner docker",
        )
    log(f"creating the converter environment {d} with {base}")
    shutil.rmtree(d, ignore_errors=True)
    for argv in ([str(base), "-m", "venv", str(d)],
                 [str(py), "-m", "pip", "install", "-q", target.lite.python_wheel, target.lite.numpy]):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise ToolkitError(f"setting up the converter failed: {' '.join(argv)}", hint=(r.stderr or r.stdout)[-800:])
    (d / ".ready").write_text(target.lite.python_wheel + "\n")
    return py


def trainer_python() -> str:
    return sys.executable
