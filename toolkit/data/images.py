"""Reading images: one place that decodes, so a bad file is named the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from toolkit.errors import ToolkitError


def read_image(path: Path) -> np.ndarray:
    """The image as BGR uint8 (what PaddleOCR's pipelines read)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ToolkitError(f"cannot decode image {path}", hint="the file is not a readable image; fix or remove its label line "
                           "(`toolkit data check` lists every one)")
    return img


def decodes(path: Path) -> str | None:
    """None when the file is a readable image, else why not (for `toolkit data check`)."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
    except OSError as exc:
        return exc.strerror or str(exc)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return "not a readable image"
    return None
