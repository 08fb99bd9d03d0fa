"""The trainer engine: imports Paddle and PaddleOCR's `ppocr` package the one safe way.

Paddle's libpaddle.so exports its own zlib symbols; anything that uses zlib (PNG, gzip,
OpenCV, PIL) after `import paddle` can segfault, so those are loaded first. `ppocr` comes
from the unstructured-paddleocr wheel, which ships the package but not as a top-level
import, so its directory goes on sys.path.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from toolkit.errors import ToolkitError


@lru_cache(maxsize=None)
def ppocr_root() -> Path:
    """Directory that contains the `ppocr` package (PaddleOCR's training code).

    Found through the distribution's file list, not the import system: once this directory is on
    sys.path its inner `unstructured_paddleocr.py` shadows the package for `find_spec`."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("unstructured-paddleocr")
    except PackageNotFoundError:
        dist = None
    root = Path(dist.locate_file("unstructured_paddleocr")) if dist else None
    if root is None or not (root / "ppocr").is_dir():
        raise ToolkitError(
            "PaddleOCR training code (ppocr) is not installed",
            hint="install the trainer environment: `make setup` (or pip install --no-deps unstructured-paddleocr==2.10.0)",
        )
    return root


_THREADS_ASKED: list[int] = []


def threads_asked() -> int:
    """OMP_NUM_THREADS as the process was started with (a parent's share of the cores), 0 if unset.
    Read before paddle is imported: importing paddle sets it to 1 where nothing did."""
    return _THREADS_ASKED[0] if _THREADS_ASKED else int(os.environ.get("OMP_NUM_THREADS") or 0)


@lru_cache(maxsize=None)
def paddle():
    """Import paddle after the zlib users, with the old program IR that Paddle Lite reads."""
    _THREADS_ASKED.append(threads_asked())
    os.environ.setdefault("FLAGS_enable_pir_api", "0")
    os.environ.setdefault("GLOG_minloglevel", "2")
    import zlib  # noqa: F401
    import cv2  # noqa: F401
    import PIL.Image  # noqa: F401

    try:
        import paddle as _paddle
    except ImportError as exc:
        raise ToolkitError(f"paddlepaddle is not importable ({exc})", hint="run `make setup`") from None
    root = str(ppocr_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import logging

    logging.getLogger("ppocr").setLevel(logging.ERROR)
    return _paddle


def versions() -> dict[str, str]:
    """Versions of the Paddle stack in this environment, for manifests."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("paddlepaddle", "paddlepaddle-gpu", "paddleslim", "unstructured-paddleocr", "rapidocr-paddle"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out
