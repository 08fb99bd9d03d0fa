"""Text recognition (CTC): line crops with their text, per-step character distributions,
exact-line accuracy.

A line is resized to height 48 keeping its aspect (PaddleOCR's resize_norm_img) and padded on
the right to a multiple of 32 pixels (at least the config's width, 320): lines of one padded
width are batched together, which gives exactly the output a batch of one would, and the
device runner pads the same way. Real document lines are long, so there is no 25-character
limit and no squeezing into 320 pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from toolkit.data.images import read_image
from toolkit.data.labels import read_rec_labels
from toolkit.models.config import dictionary_chars
from toolkit.tasks.base import Batch, Batches, Task

WIDTH_MULTIPLE = 32
# Training pads lines to the next of these widths, so a batch wastes little on padding.
TRAIN_WIDTHS = (320, 480, 640, 960, 1280, 1600, 2240, 3200)


def rec_input(img: np.ndarray, width: int, height: int, pad_to: int) -> np.ndarray:
    """resize_norm_img: resize to `width` x `height`, scale to [-1, 1], pad right with zeros to `pad_to`."""
    resized = cv2.resize(img, (width, height)).astype("float32")
    chw = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, pad_to), dtype="float32")
    out[:, :, :width] = chw
    return out


class RecTask(Task):
    name = "rec"
    metric = "acc"
    metric_label = "exact-line accuracy"
    counts_correct = True

    # ---- shapes
    @staticmethod
    def shape(cfg: dict) -> tuple[int, int, int]:
        """(height, least padded width, largest width) of the model input."""
        ev = cfg.get("Eval") or {}
        _, h, w = ev.get("image_shape", [3, 48, 320])
        return int(h), int(w), int(ev.get("max_width", 3200))

    def widths(self, img: np.ndarray, cfg: dict) -> tuple[int, int]:
        """(resized width, padded width) of one line."""
        height, least, most = self.shape(cfg)
        h, w = img.shape[:2]
        resized = max(1, min(most, int(math.ceil(height * w / float(h)))))
        return resized, max(least, -(-resized // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)

    # ---- data
    def read_labels(self, path: Path, cfg: dict, on_error: str):
        return read_rec_labels(path, None, on_error, charset=set(dictionary_chars(cfg)))

    def line_input(self, img: np.ndarray, cfg: dict, pad_to: int | None = None) -> np.ndarray:
        resized, padded = self.widths(img, cfg)
        return rec_input(img, resized, self.shape(cfg)[0], pad_to or padded)

    def groups(self, samples: Sequence, cfg: dict, batch_size: int = 32) -> list[list[int]]:
        """Lines of one padded width together; wide lines in smaller batches, so that every batch
        holds about as many pixels as `batch_size` lines of the least width (memory stays flat:
        Paddle's allocator keeps each batch's peak)."""
        by_width: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            by_width.setdefault(self.widths(read_image(s.image), cfg)[1], []).append(i)
        least = self.shape(cfg)[1]
        out = []
        for width, idx in sorted(by_width.items()):
            n = max(1, batch_size * least // width)
            out += [idx[b:b + n] for b in range(0, len(idx), n)]
        return out

    def batch(self, samples: Sequence, index: list[int], cfg: dict) -> Batch:
        images = [read_image(samples[i].image) for i in index]
        width = max(self.widths(img, cfg)[1] for img in images)
        return Batch(np.stack([self.line_input(img, cfg, width) for img in images]), list(index))

    def training_batches(self, samples: Sequence, cfg: dict, settings, seed: int) -> Batches:
        """Each step draws one width group (in proportion to its size), then a batch inside it."""
        index = {c: i + 1 for i, c in enumerate(dictionary_chars(cfg))}  # 0 is the CTC blank
        height = self.shape(cfg)[0]
        bs = settings.batch_size
        images: dict[int, np.ndarray] = {}
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            img = read_image(s.image)
            images[i] = img
            padded = self.widths(img, cfg)[1]
            groups.setdefault(next((w for w in TRAIN_WIDTHS if w >= padded), padded), []).append(i)
        keys = sorted(groups)
        weights = np.array([len(groups[k]) for k in keys], dtype="float64")

        def make(step: int) -> dict:
            rng = np.random.default_rng([seed, step])
            width = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
            members = groups[width]
            idx = rng.choice(len(members), size=bs, replace=len(members) < bs)
            picked = [members[int(j)] for j in idx]
            ids = [[index[c] for c in samples[i].text] for i in picked]
            longest = max(len(x) for x in ids)
            return {"image": np.stack([rec_input(images[i], self.widths(images[i], cfg)[0], height, width) for i in picked]),
                    "label": np.array([x + [0] * (longest - len(x)) for x in ids], dtype="int32"),
                    "length": np.array([len(x) for x in ids], dtype="int64")}

        return Batches(len(samples), make)

    # ---- model
    def input_spec(self, cfg: dict) -> list:
        from toolkit.engine import paddle

        return [paddle().static.InputSpec([None, 3, self.shape(cfg)[0], -1], "float32", name="x")]

    def probe_shape(self, cfg: dict) -> tuple[int, ...]:
        height, least, _ = self.shape(cfg)
        return (1, 3, height, least)

    def model_output(self, out):
        return out["ctc"] if isinstance(out, dict) else out

    def loss(self, cfg: dict, settings, teacher):
        """CTC on the labels (label_weight) plus distillation to the float model's per-step
        character distributions (distill_weight, KL): the student keeps the float model's
        behaviour on lines whose labels it would otherwise over-fit."""
        from toolkit.engine import paddle

        pd = paddle()
        F = pd.nn.functional
        w, wl = settings.distill_weight, settings.label_weight

        def rec_loss(out, batch):
            logits = self.model_output(out)
            n, t = logits.shape[0], logits.shape[1]
            total = 0.0
            if wl:
                lengths = pd.full([n], t, dtype="int64")
                total = wl * F.ctc_loss(logits.transpose([1, 0, 2]), batch["label"], lengths, batch["length"], blank=0, reduction="mean")
            if w:
                with pd.no_grad():
                    target = self.model_output(teacher(batch["image"]))  # eval mode: per-step probabilities
                total = total + w * F.kl_div(F.log_softmax(logits, axis=-1), target, reduction="sum") / (n * t)
            return total

        return rec_loss

    # ---- inference and metric
    def decoder(self, cfg: dict):
        """PaddleOCR's CTCLabelDecode for this config's dictionary."""
        from toolkit.engine import paddle

        paddle()
        from ppocr.postprocess.rec_postprocess import CTCLabelDecode

        return CTCLabelDecode(cfg["Global"]["character_dict_path"], cfg["Global"].get("use_space_char", True))

    def texts(self, outputs: list[np.ndarray], cfg: dict) -> list[tuple[str, float]]:
        decode = self.decoder(cfg)
        return [tuple(decode(o[None])[0]) for o in outputs]

    def score(self, outputs: list[np.ndarray], samples: Sequence, cfg: dict, metas: list | None = None) -> dict:
        from rapidfuzz.distance import Levenshtein

        read = self.texts(outputs, cfg)
        texts = [t for t, _ in read]
        labels = [s.text for s in samples]
        n = max(len(samples), 1)
        edits = [Levenshtein.distance(t, g) for t, g in zip(texts, labels)]
        return {"acc": sum(t == g for t, g in zip(texts, labels)) / n,
                "acc_ignore_space": sum(t.replace(" ", "") == g.replace(" ", "") for t, g in zip(texts, labels)) / n,
                "norm_edit_dis": 1 - sum(Levenshtein.normalized_distance(t, g) for t, g in zip(texts, labels)) / n,
                "cer": sum(edits) / max(sum(len(g) for g in labels), 1),
                "lines": len(samples), "predictions": texts, "scores": [round(float(s), 4) for _, s in read]}

    def correct(self, output: np.ndarray, sample, cfg: dict) -> bool:
        return self.texts([output], cfg)[0][0] == sample.text

    def output_error(self, outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
        """Mean L1 distance between per-step character distributions."""
        return float(np.mean([np.abs(o - r).sum(-1).mean() for o, r in zip(outs, ref)]))

    def disagreements(self, samples: Sequence, float_pred: list, quant_pred: list) -> list[dict]:
        """Lines float and int8 read differently; those int8 gets wrong and float right first."""
        return [{"image": str(s.image), "label": s.text, "float": f, "quant": q, "order": 0 if (q != s.text and f == s.text) else 1}
                for s, f, q in zip(samples, float_pred, quant_pred) if f != q]

    def device_summary(self, f: dict) -> str:
        noise = (f.get("host_noise") or {}).get("identical")
        return (f"{100 * f['identical']:.1f}% lines identical" + (f" (two host implementations: {100 * noise:.1f}%)" if noise is not None else "")
                + f"; accuracy {f['acc_device']:.4f} device vs {f['acc_host']:.4f} host ({f['lines']} lines)")

    def bundle_files(self, cfg: dict) -> dict[str, Path]:
        return {self.runtime_config(cfg)["dict"]: Path(cfg["Global"]["character_dict_path"])}

    def runtime_config(self, cfg: dict) -> dict:
        height, least, most = self.shape(cfg)
        return {"model": "models/rec.nb", "image_shape": [3, height, least], "width_multiple": WIDTH_MULTIPLE, "max_width": most,
                "dict": "dict/" + Path(cfg["Global"]["character_dict_path"]).name, "use_space_char": cfg["Global"].get("use_space_char", True),
                "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "color_order": "BGR"}
