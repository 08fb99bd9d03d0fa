"""Text detection (DB): images with line polygons, the probability map, hmean.

Preprocessing is PaddleOCR's own arithmetic (DetResizeForTest + NormalizeImage on the BGR
image), post-processing its DBPostProcess, the metric its DetMetric (IoU 0.5, don't-care
regions), so host figures mean what PaddleOCR's mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon

from toolkit.data.images import read_image
from toolkit.data.labels import DetSample, read_det_labels
from toolkit.tasks.base import Batch, Batches, Task


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


class DetTask(Task):
    name = "det"
    metric = "hmean"
    metric_label = "hmean"

    # ---- data
    def read_labels(self, path: Path, cfg: dict, on_error: str):
        return read_det_labels(path, None, on_error)

    @staticmethod
    def _eval(cfg: dict) -> dict:
        return cfg.get("Eval") or {}

    def normalize(self, img: np.ndarray, cfg: dict) -> np.ndarray:
        """NormalizeImage (scale 1/255, mean/std in the BGR order PaddleOCR reads) + HWC->CHW."""
        ev = self._eval(cfg)
        mean = np.array(ev.get("mean", [0.485, 0.456, 0.406]), dtype="float32")
        std = np.array(ev.get("std", [0.229, 0.224, 0.225]), dtype="float32")
        return ((img.astype("float32") / 255.0 - mean) / std).transpose(2, 0, 1)

    def image_input(self, img: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
        ev = self._eval(cfg)
        resized, shape = det_resize(img, int(ev.get("limit_side_len", 960)), ev.get("limit_type", "max"))
        return self.normalize(resized, cfg)[None], shape

    def groups(self, samples: Sequence, cfg: dict, batch_size: int = 32) -> list[list[int]]:
        return [[i] for i in range(len(samples))]  # pages differ in size: one image a batch

    def batch(self, samples: Sequence, index: list[int], cfg: dict) -> Batch:
        xs, shapes = zip(*(self.image_input(read_image(samples[i].image), cfg) for i in index))
        return Batch(np.concatenate(xs), list(index), list(shapes))

    def training_batches(self, samples: Sequence, cfg: dict, settings, seed: int) -> Batches:
        crop, bs = settings.crop_size, settings.batch_size
        loss = cfg.get("Loss") or {}
        cache: dict[int, tuple] = {}

        ev = self._eval(cfg)

        def item(i: int, rng: np.random.Generator) -> tuple:
            if i not in cache:
                # At the scale inference sees it (DetResizeForTest): a page scanned at 300 DPI is shrunk
                # to 960 pixels, and its ranges and training must be those of that small text.
                img, (_, _, ry, rx) = det_resize(read_image(samples[i].image), int(ev.get("limit_side_len", 960)), ev.get("limit_type", "max"))
                scaled = DetSample(samples[i].image, [np.asarray(p) * np.array([rx, ry], dtype="float32") for p in samples[i].polys],
                                   samples[i].ignore)
                gt, mask = shrink_maps(img.shape[:2], scaled, float(loss.get("shrink_ratio", 0.4)), int(loss.get("min_text_size", 8)))
                cache[i] = (img, gt, mask, scaled.polys)
            img, gt, mask, polys = cache[i]
            h, w = img.shape[:2]
            if h < crop or w < crop:  # small image: pad up to the crop
                ph, pw = max(crop - h, 0), max(crop - w, 0)
                img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
                gt = np.pad(gt, ((0, ph), (0, pw)))
                mask = np.pad(mask, ((0, ph), (0, pw)))
                h, w = img.shape[:2]
            # Centre the crop on a random text region so batches are not mostly background.
            if polys:
                cx, cy = np.asarray(polys[int(rng.integers(len(polys)))]).mean(axis=0)
            else:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            x0 = int(np.clip(cx - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
            y0 = int(np.clip(cy - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
            sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            return self.normalize(img[sl], cfg), gt[sl], mask[sl]

        def make(step: int) -> dict:
            rng = np.random.default_rng([seed, step])
            idx = rng.choice(len(samples), size=bs, replace=len(samples) < bs)
            items = [item(int(i), rng) for i in idx]
            return {"image": np.stack([a for a, _, _ in items]), "shrink": np.stack([b for _, b, _ in items]),
                    "mask": np.stack([c for _, _, c in items])}

        return Batches(len(samples), make)

    # ---- model
    def input_spec(self, cfg: dict) -> list:
        from toolkit.engine import paddle

        return [paddle().static.InputSpec([None, 3, -1, -1], "float32", name="x")]

    def probe_shape(self, cfg: dict) -> tuple[int, ...]:
        return (1, 3, 640, 640)

    def model_output(self, out):
        return out["maps"]

    def loss(self, cfg: dict, settings, teacher):
        """Balanced BCE + dice on the shrink map (label_weight) plus distillation to the float
        model's probability map (distill_weight): the threshold branch is not in the shipped weights."""
        from toolkit.engine import paddle

        pd = paddle()
        F = pd.nn.functional
        w, wl = settings.distill_weight, settings.label_weight

        def det_loss(out, batch):
            prob = out["maps"][:, 0]
            total = 0.0
            if wl:
                gt, mask = batch["shrink"], batch["mask"]
                bce = F.binary_cross_entropy(prob.clip(1e-6, 1 - 1e-6), gt, reduction="none")
                pos = gt * mask
                neg = (1 - gt) * mask
                n_pos = pos.sum()
                n_neg = pd.minimum(neg.sum(), n_pos * 3 + 1)
                k = int(n_neg.item())
                neg_top = pd.topk((bce * neg).flatten(), k=max(k, 1))[0].sum() if k > 0 else pd.zeros([])
                balanced = ((bce * pos).sum() + neg_top) / (n_pos + n_neg + 1e-6)
                inter = (prob * gt * mask).sum()
                dice = 1 - 2 * inter / ((prob * mask).sum() + (gt * mask).sum() + 1e-6)
                total = wl * (balanced + dice)
            if w:
                with pd.no_grad():
                    t = teacher(batch["image"])["maps"][:, 0]
                total = total + w * F.mse_loss(prob, t) * 10
            return total

        return det_loss

    # ---- inference and metric
    def postprocess(self, cfg: dict):
        from toolkit.engine import paddle

        paddle()  # ppocr on the path
        from ppocr.postprocess.db_postprocess import DBPostProcess

        pp = dict(cfg.get("PostProcess") or {})
        pp.pop("name", None)
        return DBPostProcess(**pp)

    def boxes(self, outputs: list[np.ndarray], metas: list, cfg: dict) -> list[list]:
        post = self.postprocess(cfg)
        return [[np.asarray(b).tolist() for b in post({"maps": prob[None]}, shape[None])[0]["points"]] for prob, shape in zip(outputs, metas)]

    def score(self, outputs: list[np.ndarray], samples: Sequence, cfg: dict, metas: list | None = None) -> dict:
        from ppocr.metrics.det_metric import DetMetric

        boxes = self.boxes(outputs, metas, cfg)
        metric = DetMetric()
        for found, s in zip(boxes, samples):
            metric([{"points": np.asarray(found).reshape(-1, 4, 2) if found else np.zeros((0, 4, 2))}],
                   [None, None, [[np.asarray(p) for p in s.polys]], [list(s.ignore)]])
        m = metric.get_metric()
        return {"hmean": float(m["hmean"]), "precision": float(m["precision"]), "recall": float(m["recall"]),
                "images": len(samples), "boxes_found": sum(len(b) for b in boxes), "predictions": boxes}

    def disagreements(self, samples: Sequence, float_pred: list, quant_pred: list) -> list[dict]:
        """Images where float and int8 find a different number of boxes (most different first)."""
        return [{"image": str(s.image), "label": f"{len(s.polys)} labelled boxes", "float": f"{len(f)} boxes", "quant": f"{len(q)} boxes",
                 "boxes": {"float": f, "quant": q}, "order": -abs(len(f) - len(q))}
                for s, f, q in zip(samples, float_pred, quant_pred) if len(f) != len(q)]

    def device_summary(self, f: dict) -> str:
        noise = (f.get("host_noise") or {}).get("cosine_min")
        return (f"map cosine min {f['cosine_min']:.4f}" + (f" (two host implementations: {noise:.4f})" if noise is not None else "")
                + f", {100 * (f.get('flipped_mean') or 0):.2f}% pixels flip; "
                f"hmean {f['hmean_device']:.4f} device vs {f['hmean_host']:.4f} host ({f['images']} images)")

    def runtime_config(self, cfg: dict) -> dict:
        pp = {k: v for k, v in (cfg.get("PostProcess") or {}).items() if k != "name"}
        ev = self._eval(cfg)
        return {"model": "models/det.nb", "limit_side_len": ev.get("limit_side_len", 960), "limit_type": ev.get("limit_type", "max"),
                "mean": ev.get("mean"), "std": ev.get("std"), "color_order": "BGR", **pp}
