"""docker/runtime/ppocr_runner.cc compiled for this machine against the stand-in Lite header
(docker/runtime/stub/paddle_api.h) and Debian's x86 OpenCV, Clipper, nlohmann/json and stb:
the runner's own pre/post-processing and output contract, tested without Paddle Lite or ARM.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
RUNTIME = REPO / "docker" / "runtime"
APT_PACKAGES = "g++ libopencv-core-dev libopencv-imgproc-dev libpolyclipping-dev nlohmann-json3-dev libstb-dev"
HEADERS = {"opencv2/imgproc.hpp": "/usr/include/opencv4", "clipper.hpp": "/usr/include/polyclipping",
           "nlohmann/json.hpp": "/usr/include", "stb_image.h": "/usr/include/stb"}


def require_toolchain() -> None:
    """Skip (fail in CI) when the compiler or a header package is missing, naming the apt packages."""
    missing = [h for h, d in HEADERS.items() if not (Path(d) / h).exists()] + ([] if shutil.which("g++") else ["g++"])
    if missing:
        reason = f"the native runner build needs {', '.join(missing)} (apt-get install {APT_PACKAGES})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)


def build_stub_runner(out_dir: Path) -> Path:
    """ppocr_runner against the stub; rebuilt only when a source changed (the build takes ~20 s)."""
    require_toolchain()
    sources = [RUNTIME / "ppocr_runner.cc", RUNTIME / "stub" / "paddle_api.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    exe = Path(out_dir) / f"ppocr_runner-{digest}"
    if exe.exists():
        return exe
    argv = ["g++", "-std=c++14", "-O2", "-Wall", "-Werror", "-ffp-contract=off", f"-I{RUNTIME / 'stub'}",
            *(f"-I{d}" for d in dict.fromkeys(HEADERS.values())), str(sources[0]), "-o", str(exe),
            "-lopencv_imgproc", "-lopencv_core", "-lpolyclipping"]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe
