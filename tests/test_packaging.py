"""`pip install .` (a wheel, not editable) carries everything the toolkit reads at run time:
targets/ and docker/ (mapped into the package), the model configs; the console script works
from any directory."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the toolkit's wheel installed; its dependencies come from this venv's
    site-packages through a .pth line (which does not load this checkout's editable install)."""
    root = tmp_path_factory.mktemp("pkg")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(REPO)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((root / "dist").glob("toolkit-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps-from-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def test_wheel_has_targets_docker_and_configs(installed):
    py = installed / "bin" / "python"
    code = ("import toolkit, toolkit.share as s; from toolkit.models.sources import CONFIG_DIR; "
            "print(toolkit.__file__); print(s.targets_dir()); print(s.docker_dir()); print(CONFIG_DIR)")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd="/").stdout.split()
    assert str(installed) in out[0], out  # the wheel's copy, not this checkout
    assert sorted(p.name for p in Path(out[1]).glob("*.yaml")) == ["android-arm64.yaml", "android-armv7.yaml", "linux-arm64.yaml", "linux-armhf.yaml"]
    assert (Path(out[2]) / "trainer.Dockerfile").is_file() and (Path(out[2]) / "runtime" / "ppocr_runner.cc").is_file()
    assert (Path(out[3]) / "PP-OCRv4_mobile_rec.yml").is_file()
    assert all(str(installed) in p for p in out[1:])


def test_console_script_from_another_directory(installed, tmp_path):
    exe = installed / "bin" / "toolkit"
    r = subprocess.run([str(exe), "targets", "list"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "linux-arm64" in r.stdout, r.stderr
    r = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "--max-drop" in r.stdout and "--target" in r.stdout, r.stderr
