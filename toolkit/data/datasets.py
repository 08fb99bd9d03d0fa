"""Datasets for QAT, calibration and evaluation, with PaddleOCR's preprocessing.

A data directory has PaddleOCR label files: `det/{train,eval}.txt` (images relative to
`det/`) and `rec/{train,eval}.txt` (relative to `rec/`), which is what `toolkit data synth`
writes. Preprocessing is PaddleOCR's own arithmetic (DetResizeForTest + NormalizeImage on
the BGR image; resize_norm_img for rec), shared by training and evaluation so both see
the same pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon

from toolkit.errors import ToolkitError
from toolkit.data.labels import DetSample, RecSample, read_det_labels, read_rec_labels
from toolkit.rundir import fingerprint as fp_paths

SPLITS = ("train", "eval")


def label_file(data_dir: Path, task: str, split: str) -> Path:
    return Path(data_dir) / task / f"{split}.txt"


def fingerprint(task: str, data_dir: Path) -> dict:
    """Hash of the label files and image folder a task reads."""
    d = Path(data_dir) / task
    return fp_paths([label_file(data_dir, task, s) for s in SPLITS] + [d / "images"])


def read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ToolkitError(f"cannot decode image {path}", hint="the file is not a readable image; fix or remove its label line")
    return img


def charset(cfg: dict) -> set[str]:
    from toolkit.models.sources import dictionary_chars

    return set(dictionary_chars(cfg))


def load_split(task: str, data_dir: Path, split: str, cfg: dict, skip_bad: bool) -> list:
    """Validated samples of one split; bad lines stop (or are skipped with a count)."""
    f = label_file(data_dir, task, split)
    on_error = "skip" if skip_bad else "stop"
    if task == "det":
        samples, report = read_det_labels(f, None, on_error)
    else:
        samples, report = read_rec_labels(f, None, on_error, charset=charset(cfg),
                                          max_len=int(cfg["Global"].get("max_text_length", 25)))
    if report.skipped:
        import sys

        print(f"{f}: skipped {len(report.skipped)} of {report.total} lines (first: {report.skipped[0]})", file=sys.stderr)
    return samples


# ---------------------------------------------------------------- preprocessing
def det_resize(img: np.ndarray, limit_side_len: int, limit_type: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """PaddleOCR's DetResizeForTest (type 0): scale by the limit, round sides to multiples of 32."""
    h, w = img.shape[:2]
    if limit_type == "max":
        ratio = float(limit_side_len) / max(h, w) if max(h, w) > limit_side_len else 1.0
    else:
        ratio = float(limit_side_len) / min(h, w) if min(h, w) < limit_side_len else 1.0
    rh = max(int(round(h * ratio / 32) * 32), 32)
    rw = max(int(round(w * ratio / 32) * 32), 32)
    out = cv2.resize(img, (rw, rh))
    return out, np.array([h, w, rh / float(h), rw / float(w)], dtype="float32")


def det_normalize(img: np.ndarray, cfg: dict) -> np.ndarray:
    """NormalizeImage (scale 1/255, mean/std in the BGR order PaddleOCR reads) + HWC->CHW."""
    ev = cfg.get("Eval") or {}
    mean = np.array(ev.get("mean", [0.485, 0.456, 0.406]), dtype="float32")
    std = np.array(ev.get("std", [0.229, 0.224, 0.225]), dtype="float32")
    return ((img.astype("float32") / 255.0 - mean) / std).transpose(2, 0, 1)


def det_input(img: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    ev = cfg.get("Eval") or {}
    resized, shape = det_resize(img, int(ev.get("limit_side_len", 960)), ev.get("limit_type", "max"))
    return det_normalize(resized, cfg)[None], shape[None]


def rec_width(img: np.ndarray, height: int = 48, max_width: int = 320) -> int:
    h, w = img.shape[:2]
    return min(max_width, int(math.ceil(height * w / float(h))))


def rec_input(img: np.ndarray, width: int, height: int = 48, pad_to: int | None = None) -> np.ndarray:
    """resize_norm_img: keep aspect to `width`, scale to [-1, 1], pad right with zeros to `pad_to`."""
    resized = cv2.resize(img, (width, height)).astype("float32")
    chw = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, pad_to or width), dtype="float32")
    out[:, :, :width] = chw
    return out


def shrink_maps(shape: tuple[int, int], sample: DetSample, ratio: float = 0.4, min_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """DB's shrunk text map and training mask (PaddleOCR MakeShrinkMap semantics)."""
    h, w = shape
    gt = np.zeros((h, w), dtype="float32")
    mask = np.ones((h, w), dtype="float32")
    for poly, ignore in zip(sample.polys, sample.ignore):
        poly = np.asarray(poly, dtype="float64")
        ph = poly[:, 1].max() - poly[:, 1].min()
        pw = poly[:, 0].max() - poly[:, 0].min()
        if ignore or min(ph, pw) < min_size:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            continue
        p = Polygon(poly)
        dist = p.area * (1 - ratio**2) / max(p.length, 1e-6)
        off = pyclipper.PyclipperOffset()
        off.AddPath([tuple(map(int, pt)) for pt in poly], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        shrunk = off.Execute(-dist)
        if not shrunk:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            continue
        cv2.fillPoly(gt, [np.array(shrunk[0]).reshape(-1, 2).astype(np.int32)], 1)
    return gt, mask


# ---------------------------------------------------------------- batches
class _Batches:
    """Deterministic batch `step` of a training set: the same step gives the same batch,
    so a resumed QAT run sees exactly what an uninterrupted one would."""

    def __init__(self, count: int, make):
        self.count = count
        self._make = make

    def __call__(self, step: int) -> dict:
        return self._make(step)


def _train_and_search(task: str, data_dir: Path, cfg: dict, settings: dict, skip_bad: bool) -> tuple[list, list]:
    """The train split minus its last `search_samples` (at most a quarter), which QAT never
    trains on: the float-fallback search measures accuracy on them, not on the eval split."""
    samples = load_split(task, data_dir, "train", cfg, skip_bad)
    n = min(int(settings.get("search_samples") or 0), len(samples) // 4)
    return (samples[:-n], samples[-n:]) if n else (samples, [])


def search_samples(task: str, data_dir: Path, cfg: dict, settings: dict, skip_bad: bool) -> list:
    return _train_and_search(task, data_dir, cfg, settings, skip_bad)[1]


def training_batches(task: str, data_dir: Path, cfg: dict, settings: dict, seed: int, skip_bad: bool) -> _Batches:
    samples = _train_and_search(task, data_dir, cfg, settings, skip_bad)[0]
    bs = int(settings.get("batch_size", 4))
    if task == "det":
        crop = int(settings.get("crop_size", 320))
        loss = cfg.get("Loss") or {}
        cache: dict[int, tuple] = {}

        def item(i: int, rng: np.random.Generator) -> tuple:
            if i not in cache:
                img = read_image(samples[i].image)
                gt, mask = shrink_maps(img.shape[:2], samples[i], float(loss.get("shrink_ratio", 0.4)), int(loss.get("min_text_size", 8)))
                cache[i] = (img, gt, mask)
            img, gt, mask = cache[i]
            h, w = img.shape[:2]
            if h < crop or w < crop:  # small image: pad up to the crop
                ph, pw = max(crop - h, 0), max(crop - w, 0)
                img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
                gt = np.pad(gt, ((0, ph), (0, pw)))
                mask = np.pad(mask, ((0, ph), (0, pw)))
                h, w = img.shape[:2]
            # Centre the crop on a random text region so batches are not mostly background.
            polys = samples[i].polys
            if polys:
                cx, cy = np.asarray(polys[int(rng.integers(len(polys)))]).mean(axis=0)
            else:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            x0 = int(np.clip(cx - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
            y0 = int(np.clip(cy - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
            sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            return det_normalize(img[sl], cfg), gt[sl], mask[sl]

        def make(step: int) -> dict:
            rng = np.random.default_rng([seed, step])
            idx = rng.choice(len(samples), size=bs, replace=len(samples) < bs)
            items = [item(int(i), rng) for i in idx]
            return {"image": np.stack([a for a, _, _ in items]), "shrink": np.stack([b for _, b, _ in items]),
                    "mask": np.stack([c for _, _, c in items])}

        return _Batches(len(samples), make)

    from toolkit.models.sources import dictionary_chars

    index = {c: i + 1 for i, c in enumerate(dictionary_chars(cfg))}  # 0 is the CTC blank
    max_len = int(cfg["Global"].get("max_text_length", 25))
    width = int((cfg.get("Eval") or {}).get("image_shape", [3, 48, 320])[2])

    def make_rec(step: int) -> dict:
        rng = np.random.default_rng([seed, step])
        idx = rng.choice(len(samples), size=bs, replace=len(samples) < bs)
        images, labels, lengths = [], [], []
        for i in idx:
            s = samples[int(i)]
            img = read_image(s.image)
            images.append(rec_input(img, rec_width(img, 48, width), 48, width))
            ids = [index[c] for c in s.text][:max_len]
            labels.append(ids + [0] * (max_len - len(ids)))
            lengths.append(len(ids))
        return {"image": np.stack(images), "label": np.array(labels, dtype="int32"), "length": np.array(lengths, dtype="int64")}

    return _Batches(len(samples), make_rec)


def calibration_batches(task: str, data_dir: Path, cfg: dict, seed: int, skip_bad: bool, count: int = 16) -> list[np.ndarray]:
    """A few single-image batches from the train split for PTQ calibration."""
    samples = load_split(task, data_dir, "train", cfg, skip_bad)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
    out = []
    for i in pick:
        img = read_image(samples[int(i)].image)
        out.append(det_input(img, cfg)[0] if task == "det" else rec_input(img, rec_width(img))[None])
    return out


def eval_samples(task: str, data_dir: Path, cfg: dict, skip_bad: bool) -> list[DetSample] | list[RecSample]:
    return load_split(task, data_dir, "eval", cfg, skip_bad)
