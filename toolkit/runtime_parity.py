"""The host side of the device runner: what docker/runtime/ppocr_runner.cc must compute, and how
its outputs are compared with the host's.

The reference is PaddleOCR's own code wherever the toolkit's host pipeline has none: the box
filter and reading order (TextDetector.filter_tag_det_res, predict_system.sorted_boxes) and the
line crop (utility.get_rotate_crop_image) are taken verbatim from the installed ppocr package's
source (its modules cannot be imported without PaddleOCR's training dependencies); DBPostProcess,
the det resize and the rec resize are the toolkit's task code (toolkit/tasks/). The runner's
batch mode (`--batch LIST --out DIR`) reads a list written by `write_batch` and leaves
DIR/results.jsonl and DIR/<id>.prob.npy, read back by `read_results`.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from toolkit.errors import ToolkitError

RESULTS = "results.jsonl"


# ------------------------------------------------------------------ PaddleOCR's reference code
def _functions(path: Path, names: dict[str, str], scope: dict) -> dict:
    """Top-level functions (or `Class.method`s, as plain functions) of a Python file, compiled alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    wanted: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            wanted[node.name] = node
        elif isinstance(node, ast.ClassDef):
            wanted.update({f"{node.name}.{f.name}": f for f in node.body if isinstance(f, ast.FunctionDef)})
    out = {}
    for key, alias in names.items():
        if key not in wanted:
            raise ToolkitError(f"{path} has no {key}", hint="unstructured-paddleocr==2.10.0 is the version the toolkit reads")
        fn = wanted[key]
        fn.decorator_list = []
        module = ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[]))
        ns = dict(scope)
        exec(compile(module, str(path), "exec"), ns)  # noqa: S102 - PaddleOCR's own source, from the installed package
        out[alias] = ns[fn.name]
    return out


@lru_cache(maxsize=None)
def paddleocr() -> SimpleNamespace:
    """get_rotate_crop_image, sorted_boxes and filter_tag_det_res as PaddleOCR 2.10 wrote them."""
    import cv2

    from toolkit.engine import ppocr_root

    root = ppocr_root() / "tools" / "infer"
    scope = {"np": np, "cv2": cv2}
    fns = {**_functions(root / "utility.py", {"get_rotate_crop_image": "get_rotate_crop_image"}, scope),
           **_functions(root / "predict_system.py", {"sorted_boxes": "sorted_boxes"}, scope),
           **_functions(root / "predict_det.py", {"TextDetector.order_points_clockwise": "order_points_clockwise",
                                                 "TextDetector.clip_det_res": "clip_det_res",
                                                 "TextDetector.filter_tag_det_res": "filter_tag_det_res"}, scope)}
    detector = SimpleNamespace(order_points_clockwise=lambda pts: fns["order_points_clockwise"](detector, pts),
                               clip_det_res=lambda pts, h, w: fns["clip_det_res"](detector, pts, h, w))
    return SimpleNamespace(get_rotate_crop_image=fns["get_rotate_crop_image"], sorted_boxes=fns["sorted_boxes"],
                           filter_tag_det_res=lambda boxes, shape: fns["filter_tag_det_res"](detector, boxes, shape))


# ------------------------------------------------------------------ the host pipeline, step by step
def det_input(img: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The det model's input and PaddleOCR's shape row [h, w, ratio_h, ratio_w] (toolkit/tasks/det.py)."""
    from toolkit.tasks import get_task

    return get_task("det").image_input(img, cfg)


def db_boxes(prob: np.ndarray, shape: np.ndarray, cfg: dict) -> list[np.ndarray]:
    """DBPostProcess boxes of one probability map [H, W], in source-image pixels."""
    from toolkit.tasks import get_task

    return [np.asarray(b, dtype=np.int32) for b in get_task("det").boxes([prob[None]], [shape], cfg)[0]]


def text_boxes(boxes: Sequence[np.ndarray], image_shape: tuple) -> list[np.ndarray]:
    """What the recogniser reads, in reading order: filter_tag_det_res then sorted_boxes."""
    ref = paddleocr()
    kept = ref.filter_tag_det_res([np.asarray(b) for b in boxes], image_shape)
    return [np.asarray(b, dtype=np.float32) for b in ref.sorted_boxes(kept)] if len(kept) else []


def crop(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    return paddleocr().get_rotate_crop_image(img, np.asarray(box, dtype=np.float32).copy())


def rec_input(line: np.ndarray, cfg: dict) -> np.ndarray:
    """The rec model's input for one line (toolkit/tasks/rec.py), batch of one."""
    from toolkit.tasks import get_task

    return get_task("rec").line_input(line, cfg)[None]


def decode(probs: np.ndarray, cfg: dict) -> tuple[str, float]:
    from toolkit.tasks import get_task

    text, score = get_task("rec").texts([probs[0]], cfg)[0]
    return text, float(score)


def host_ocr(img: np.ndarray, det: Callable[[np.ndarray], np.ndarray], rec: Callable[[np.ndarray], np.ndarray],
             det_cfg: dict, rec_cfg: dict, drop_score: float = 0.5) -> list[dict]:
    """det -> boxes -> crop -> rec on the host, with any forward functions (Paddle Inference predictors)."""
    x, shape = det_input(img, det_cfg)
    return read_lines(img, text_boxes(db_boxes(det(x)[0, 0], shape, det_cfg), img.shape), rec, rec_cfg, drop_score)


def read_lines(img: np.ndarray, boxes: Sequence, rec: Callable[[np.ndarray], np.ndarray], rec_cfg: dict,
               drop_score: float = 0.5) -> list[dict]:
    """crop -> rec of given boxes (a pipeline's, or a device's), keeping the lines read with at least drop_score."""
    lines = []
    for box in boxes:
        text, score = decode(rec(rec_input(crop(img, box), rec_cfg)), rec_cfg)
        if score >= drop_score:
            lines.append({"text": text, "score": score, "box": np.asarray(box).astype(int).tolist()})
    return lines


# ------------------------------------------------------------------ comparisons
def quad_iou(a, b) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(np.asarray(a, dtype=float)), Polygon(np.asarray(b, dtype=float))
    if not (pa.is_valid and pb.is_valid):
        pa, pb = pa.buffer(0), pb.buffer(0)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


@dataclass
class Matching:
    pairs: list[tuple[int, int, float]]   # (index in a, index in b, IoU), one-to-one
    only_a: list[int]
    only_b: list[int]


def match_boxes(a: Sequence, b: Sequence, min_iou: float = 0.9) -> Matching:
    """One-to-one matching of two box lists, best IoU first."""
    cand = sorted(((quad_iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)), reverse=True)
    used_a, used_b, pairs = set(), set(), []
    for iou, i, j in cand:
        if iou < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, iou))
    return Matching(sorted(pairs), [i for i in range(len(a)) if i not in used_a], [j for j in range(len(b)) if j not in used_b])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def grey_levels(x: np.ndarray, y: np.ndarray, std: float = 0.5) -> float:
    """Largest difference of two rec inputs ((v/255 - 0.5) / 0.5) in 8-bit grey levels; inf when their shapes differ."""
    if x.shape != y.shape:
        return float("inf")
    return float(np.abs(x.astype(np.float64) - y).max() * std * 255) if x.size else 0.0


# ------------------------------------------------------------------ the runner's batch files
def write_batch(path: Path, items: Sequence[tuple[str, str, str]]) -> Path:
    """list.tsv for `ppocr_runner --batch`: (kind, id, image path as the runner will see it)."""
    lines = []
    for kind, ident, image in items:
        if kind not in ("det", "rec", "ocr") or not ident.replace("-", "").replace("_", "").replace(".", "").isalnum() or "\t" in image:
            raise ValueError(f"bad batch item {(kind, ident, image)!r}")
        lines.append(f"{kind}\t{ident}\t{image}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
    return Path(path)


def read_results(out_dir: Path) -> dict[str, dict]:
    """results.jsonl by id; a det item's probability map loaded as `prob_map`."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        raise ToolkitError(f"the runner wrote no {RESULTS} in {out_dir}", hint="see the runner's output next to it")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item.get("prob"):
            item["prob_map"] = np.load(Path(out_dir) / item["prob"])
        out[item["id"]] = item
    return out
