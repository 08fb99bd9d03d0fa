"""Rec's QAT also trains on the lines the det model cuts from the det train pages.

On a page, rec reads what det -> crop cuts (unclipped DB boxes, a rotated crop, margins that vary
with the text), not the tidy crops of a rec dataset. On the debian-manuals eval pages the demo's
quantized rec read 89.3% of the dataset's line crops right but 84.2% of the lines the whole-page
pipeline cut, and two host implementations of it disagreed on 2.6% of the crops but 6.0% of the
page lines: pipeline crops sit where the int8 model is least sure, so they are also where a
device's int8 kernels read otherwise. So, where det data is at hand, rec's QAT also trains on the
float det model's boxes of the det train pages, each labelled with the transcription of the one
labelled line it covers (IoU >= 0.5 and no other line more than 30% inside it). They are written
as a dataset folder, quant/rec/det-cut/ (rec/train.txt, rec/images/, dataset.json with the
counts), reused while the det model, the det data and the held-out lines stay the same. Lines
whose text is in the float-fallback search set are left out, so that the search still measures
lines QAT never saw. `Quant.det_cut_lines: false` in the rec config turns it off.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from toolkit.data.datasets import Dataset, fingerprint, load_split
from toolkit.data.images import read_image
from toolkit.data.labels import read_rec_labels
from toolkit.digest import hash_json
from toolkit.jobs import QuantJob
from toolkit.models.config import dictionary_chars
from toolkit.models.sources import ModelSource
from toolkit.rundir import atomic_dir

VERSION = 1       # bump when the lines cut change, so folders are cut again
MIN_IOU = 0.5     # a det box and the labelled line it is read as
MAX_OTHER = 0.3   # the most of any other labelled line a box may cover


def cuts_lines(job: QuantJob) -> bool:
    """Whether this QAT job also trains on lines the det model cuts."""
    from toolkit.stages.quantize.settings import settings_for
    from toolkit.tasks import get_task

    return (get_task(job.task).trains_on_det_cuts and job.options.method == "qat" and job.cut_with is not None
            and settings_for(job.task, job.source.load_config(), job.source.config, job.options).det_cut_lines)


def det_cut_lines(det: ModelSource, datasets: Sequence[Dataset], rec_cfg: dict, held_out: set[str], out_dir: Path,
                  skip_bad: bool, log: Callable[[str], None] | None = None) -> tuple[list, dict]:
    """(rec samples, counts) of the lines cut from every det train split; cut once, then reused."""
    charset = set(dictionary_chars(rec_cfg))
    key = hash_json({"version": VERSION, "det": det.fingerprint(), "data": fingerprint("det", datasets),
                     "held_out": sorted(held_out), "charset": sorted(charset)})
    meta = out_dir / "dataset.json"
    if not (meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("key") == key):
        pages = [s for d in datasets if d.has("det", "train") for s in load_split("det", d, "train", det.load_config(), skip_bad)]
        if log:
            log(f"cutting rec training lines from {len(pages)} det train pages with the det model")
        with atomic_dir(out_dir) as tmp:
            counts = _cut(det, pages, charset, held_out, tmp)
            (tmp / "dataset.json").write_text(json.dumps({"name": "det-cut", "kind": "derived", "key": key, "counts": counts},
                                                         indent=1) + "\n", encoding="utf-8")
    counts = json.loads(meta.read_text(encoding="utf-8"))["counts"]
    if not counts["lines"]:
        return [], counts
    samples, _ = read_rec_labels(out_dir / "rec" / "train.txt", charset=charset)
    return samples, counts


def _cut(det: ModelSource, pages: list, charset: set[str], held_out: set[str], out: Path) -> dict:
    from toolkit.engine import paddle
    from toolkit.models.build import build_model
    from toolkit.runtime_parity import crop, match_boxes, text_boxes
    from toolkit.tasks import get_task
    from shapely.geometry import Polygon

    pd = paddle()
    loaded, task = build_model(det), get_task("det")

    def forward(x: np.ndarray) -> np.ndarray:
        with pd.no_grad():
            return task.model_output(loaded.model(pd.to_tensor(x))).numpy()

    (out / "rec" / "images").mkdir(parents=True)
    counts, lines = Counter(pages=len(pages)), []
    for n, page in enumerate(pages):
        outs, metas = task.run(forward, [page], loaded.config)
        img = read_image(page.image)
        boxes = text_boxes([np.asarray(b) for b in task.boxes(outs, metas, loaded.config)[0]], img.shape)
        counts["boxes"] += len(boxes)
        labelled = {j: i for i, j, _ in match_boxes(page.polys, boxes, MIN_IOU).pairs}
        areas = [Polygon(p).area for p in page.polys]
        for j, box in enumerate(boxes):
            i = labelled.get(j)
            text = page.texts[i] if i is not None else ""
            shape = Polygon(box)
            why = ("unmatched" if i is None else "dont_care" if page.ignore[i] or not text
                   else "overlapping" if any(k != i and shape.intersection(Polygon(p)).area > MAX_OTHER * areas[k] for k, p in enumerate(page.polys))
                   else "held_out" if text in held_out else "charset" if not set(text) <= charset else None)
            if why:
                counts[why] += 1
                continue
            name = f"p{n:05d}_{j:03d}.png"
            cv2.imwrite(str(out / "rec" / "images" / name), crop(img, box))
            lines.append(f"images/{name}\t{text}\n")
    counts["lines"] = len(lines)
    (out / "rec" / "train.txt").write_text("".join(lines), encoding="utf-8")
    return dict(counts)
