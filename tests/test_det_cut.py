"""Rec's extra training lines cut by the real det model from det train pages (stages/quantize/det_cut.py)."""

from __future__ import annotations

import json

from toolkit.data.datasets import load_split, open_datasets
from toolkit.data.images import read_image
from toolkit.models.sources import resolve_source
from toolkit.stages.quantize.det_cut import det_cut_lines


def test_lines_cut_by_det_carry_the_text_of_the_line_they_cover(small_data, tmp_path):
    det, rec = resolve_source("det", None), resolve_source("rec", None)
    datasets = open_datasets([small_data])
    rec_cfg = rec.load_config()
    out = tmp_path / "det-cut"
    lines, counts = det_cut_lines(det, datasets, rec_cfg, set(), out, skip_bad=False)

    pages = load_split("det", datasets[0], "train", det.load_config(), skip_bad=False)
    labelled = {t for p in pages for t, ignore in zip(p.texts, p.ignore) if not ignore}
    assert counts["pages"] == len(pages) and counts["lines"] == len(lines) > len(pages)
    assert counts["boxes"] == sum(counts.get(k, 0) for k in ("lines", "unmatched", "dont_care", "overlapping", "held_out", "charset"))
    assert {s.text for s in lines} <= labelled
    for s in lines:
        img = read_image(s.image)
        assert img.shape[0] >= 8 and img.shape[1] > img.shape[0]  # a line, upright

    # Reused while nothing changed; cut again without the lines the search holds out.
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert det_cut_lines(det, datasets, rec_cfg, set(), out, skip_bad=False)[1] == counts
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    held = {lines[0].text}
    again, counts2 = det_cut_lines(det, datasets, rec_cfg, held, out, skip_bad=False)
    assert lines[0].text not in {s.text for s in again}
    assert counts2["held_out"] == sum(s.text in held for s in lines) and counts2["lines"] == len(lines) - counts2["held_out"]
    assert json.loads((out / "dataset.json").read_text())["counts"] == counts2
