"""Read and validate PaddleOCR label files, reporting every problem as `file:line: reason`.

Training and evaluation crash deep inside Paddle (or silently learn garbage) on a bad label
line, so each line is checked here first and a bad one is named precisely.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from shapely.geometry import Polygon

from toolkit.errors import ToolkitError

IGNORE_TEXTS = ("###", "*")  # PaddleOCR's "don't care" transcriptions
SKIP_HINT = "fix the line or pass --skip-bad-labels to skip bad lines"


@dataclass(frozen=True)
class DetSample:
    image: Path
    polys: list[np.ndarray]  # each (N, 2) float32, image coordinates
    ignore: list[bool]  # True where the transcription marks a "don't care" region


@dataclass(frozen=True)
class RecSample:
    image: Path
    text: str


@dataclass
class LabelReport:
    path: Path
    total: int = 0  # non-blank lines
    usable: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: reason"


class _Bad(Exception):
    """A reason why one label line is unusable."""


def read_det_labels(label_file: Path, data_root: Path | None = None,
                    on_error: str = "stop") -> tuple[list[DetSample], LabelReport]:
    """Detection labels: `image<TAB>[{"transcription": ..., "points": [[x, y], ...]}, ...]`."""
    return _read(label_file, data_root, on_error, _parse_det)


def read_rec_labels(label_file: Path, data_root: Path | None = None, on_error: str = "stop",
                    charset: set[str] | None = None,
                    max_len: int | None = None) -> tuple[list[RecSample], LabelReport]:
    """Recognition labels: `image<TAB>text`; `charset`/`max_len` are the recogniser's limits."""
    def parse(image: Path, label: str, col: int) -> RecSample:
        if not label.strip():
            raise _Bad("empty text")
        if charset is not None:
            bad = sorted({c for c in label if c not in charset})
            if bad:
                raise _Bad("text has characters not in the dictionary: "
                           + " ".join(repr(c) for c in bad[:10]) + (" ..." if len(bad) > 10 else ""))
        if max_len is not None and len(label) > max_len:
            raise _Bad(f"text is {len(label)} characters, longer than the maximum {max_len}")
        return RecSample(image, label)
    return _read(label_file, data_root, on_error, parse)


def _parse_det(image: Path, label: str, col: int) -> DetSample:
    if not label.strip():
        raise _Bad("missing label after the tab")
    try:
        boxes = json.loads(label)
    except json.JSONDecodeError as e:
        raise _Bad(f"broken JSON ({e.msg}: column {e.colno + col})") from None
    if not isinstance(boxes, list) or not all(isinstance(b, dict) and "points" in b for b in boxes):
        raise _Bad('label is not a JSON list of objects with "points"')
    polys, ignore = [], []
    for i, box in enumerate(boxes, 1):
        pts = box["points"]
        if not (isinstance(pts, list) and len(pts) >= 3 and all(_is_xy(p) for p in pts)):
            raise _Bad(f"box {i}: points are not a list of >= 3 [x, y] numbers")
        poly = np.asarray(pts, dtype=np.float32)
        shape = Polygon(poly)
        if not shape.is_valid:
            raise _Bad(f"box {i}: polygon intersects itself")
        if shape.area < 1:
            raise _Bad(f"box {i}: degenerate polygon (area {shape.area:.2f} px²)")
        polys.append(poly)
        ignore.append(box.get("transcription") in IGNORE_TEXTS)
    return DetSample(image, polys, ignore)


def _is_xy(p) -> bool:
    return (isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in p))


def _read(label_file: Path, data_root: Path | None, on_error: str,
          parse: Callable[[Path, str, int], object]) -> tuple[list, LabelReport]:
    """Shared line loop: split fields, check the image exists, parse the label, stop or skip."""
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    label_file = Path(label_file)
    if not label_file.is_file():
        raise ToolkitError(f"label file not found: {label_file}",
                           hint="check the path (and the dataset config pointing to it)")
    try:
        text = label_file.read_text(encoding="utf-8-sig")  # -sig drops a UTF-8 BOM
    except UnicodeDecodeError as e:
        raise ToolkitError(f"{label_file}: not UTF-8 text ({e.reason} at byte {e.start})",
                           hint="save the label file as UTF-8") from None
    root = Path(data_root) if data_root is not None else label_file.parent
    report, samples = LabelReport(label_file), []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): it also splits on \x1c, \u2028, ...
        line = line.rstrip("\r")
        if not line.strip():
            continue
        report.total += 1
        try:
            rel, tab, label = line.partition("\t")
            if not tab:
                raise _Bad("missing tab between image path and label")
            if not rel.strip():
                raise _Bad("missing image path before the tab")
            image = root / rel
            if not image.is_file():
                raise _Bad(f"image not found: {image}")
            samples.append(parse(image, label, len(rel) + 1))
        except _Bad as e:
            where = f"{label_file}:{lineno}: {e}"
            if on_error == "stop":
                raise ToolkitError(where, hint=SKIP_HINT) from None
            report.skipped.append(where)
    report.usable = len(samples)
    if not samples:
        raise ToolkitError(
            f"{label_file}: no usable samples ({report.total} lines, {len(report.skipped)} skipped)",
            hint=("first problems: " + "; ".join(report.skipped[:3])) if report.skipped
            else "the file has no label lines")
    return samples, report
