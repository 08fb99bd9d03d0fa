"""report.json -> report.html on every shape the stages can record: the search met before
training, met at the first check after QAT (also as older runs recorded it), layers added after
QAT (with checks stopped early), search off, PTQ, det only, rec only; and data in file names and
texts is escaped."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from toolkit.report.page import write_html
from toolkit.rundir import RunDir, atomic_write_json

RANKING = [{"layer": f"backbone.blocks6.{i}.dw_conv", "error": 0.5 / (i + 1), "weights": 1000 * (i + 1), "harm_per_kb": 0.2 / (i + 1), "rank": i + 1}
           for i in range(5)]
BASE = {"budget_points": 1.0, "search_samples": 200, "pre_training_samples": 100, "float_metric": 0.98, "pre_training_target_points": 3.0,
        "seconds_before_training": 1.0}
SEARCHES = {
    "met before training": {**BASE, "naive": {"ok": True, "metric": 0.975, "samples": 100}, "ranking": [], "float_layers": [],
                            "history_before_training": [], "added_after_training": [], "met": True, "final_metric": 0.98,
                            "final_drop_points": 0.0, "float_extra_bytes": 0,
                            "history_after_training": [{"ok": True, "metric": 0.98, "samples": 200, "float_layers": 0, "added": None, "drop_points": 0.0}]},
    "only after QAT (the default), met at once": {**BASE, "naive": None, "ranking": [], "float_layers": [], "history_before_training": [],
                                                  "added_after_training": [], "met": True, "final_metric": 0.985, "final_drop_points": -0.5,
                                                  "float_extra_bytes": 0,
                                                  "history_after_training": [{"ok": True, "metric": 0.985, "samples": 100, "float_layers": 0,
                                                                              "added": None, "drop_points": -0.5}]},
    # As runs before this version recorded it: the first check after QAT had no drop_points.
    "met at the first check after QAT (older record)": {**BASE, "naive": {"ok": False, "metric": None, "samples": 25, "at_most": 0.5},
                                                       "ranking": RANKING, "float_layers": [RANKING[0]["layer"]], "added_after_training": [],
                                                       "history_before_training": [{"float_layers": 0, "added": None, "ok": False, "metric": None,
                                                                                    "samples": 25, "at_most": 0.5, "drop_points": None}],
                                                       "history_after_training": [{"ok": True, "metric": 0.99, "samples": 200}], "met": True},
    "layers added after QAT": {**BASE, "naive": {"ok": False, "metric": 0.14, "samples": 100}, "ranking": RANKING,
                               "float_layers": [r["layer"] for r in RANKING[:3]], "added_after_training": [RANKING[2]["layer"]],
                               "history_before_training": [{"float_layers": 0, "added": None, "ok": False, "metric": 0.14, "samples": 100, "drop_points": 84.0},
                                                           {"float_layers": 1, "added": RANKING[0]["layer"], "ok": False, "metric": None,
                                                            "samples": 50, "at_most": 0.9, "drop_points": None},
                                                           {"float_layers": 2, "added": RANKING[1]["layer"], "ok": True, "metric": 0.96,
                                                            "samples": 100, "drop_points": 2.0}],
                               "history_after_training": [{"ok": False, "metric": 0.97, "samples": 200, "float_layers": 0, "added": None, "drop_points": 1.0},
                                                          {"ok": True, "metric": 0.98, "samples": 200, "float_layers": 1, "added": RANKING[2]["layer"],
                                                           "drop_points": 0.0}],
                               "met": True, "final_metric": 0.98, "final_drop_points": 0.0, "float_weight_count": 6000, "float_extra_bytes": 18000},
}
EVIL = '<img src=x onerror=alert(1)>'


def _sets(task: str, image: str) -> dict:
    key = "hmean" if task == "det" else "acc"
    res = {"float": {key: 0.99}, "quant": {key: 0.98}, "drop_points": 1.0, "kind": "real", "path": "/data",
           "disagreements": [{"image": image, "label": EVIL, "float": "a", "quant": EVIL, "order": 0,
                              **({"boxes": {"float": [[[1, 1], [20, 1], [20, 10], [1, 10]]], "quant": []}} if task == "det" else {})}]}
    return {"judged": "pages", "sets": {"pages": res}, "x86_nb_check": {"max_abs_diff": 1e-7, "tolerance": 1e-4, "ok": True}}


def make_run(tmp_path: Path, tasks: list[str], quant: dict[str, dict | None]) -> tuple[RunDir, dict]:
    """A run directory holding what the stages write, for the given tasks and quantization records."""
    run = RunDir(tmp_path / "run")
    image = tmp_path / f"{EVIL}.jpg"
    cv2.imwrite(str(tmp_path / "x.jpg"), np.full((40, 60, 3), 255, np.uint8))
    (tmp_path / "x.jpg").rename(image)
    atomic_write_json(run.metrics_path(), {t: _sets(t, str(image)) for t in tasks})
    for task, rec in quant.items():
        if rec is None:  # PTQ
            atomic_write_json(run.quant_info(task, "ptq"), {"method": "ptq", "task": task})
            continue
        atomic_write_json(run.quant_info(task, "qat"), {"method": "qat", "task": task, **rec})
        run.train_log(task).write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 5)))
    from toolkit.stages.evaluate import summarize_metrics

    report = {"run_dir": str(run.root), "status": "ok", "metrics": summarize_metrics(json.loads(run.metrics_path().read_text())),
              "targets": {"android-arm64": {t: {"float_nb_bytes": 4e6, "int8_nb_bytes": 1.2e6, "int8_ops": 40, "int8_op_types": {"conv2d": 40},
                                                "size_ratio": 0.3, "lite_version": "v2.12"} for t in tasks}},
              "quantization": {t: {"method": "qat" if quant[t] else "ptq"} for t in tasks}, "command": f"toolkit run {EVIL}",
              "versions": {"paddlepaddle": "2.6.2"}}
    return run, report


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            self.ids.add(a["id"])


CASES = {f"rec: {name}": (["rec"], {"rec": {"search": s}}) for name, s in SEARCHES.items()}
CASES.update({"search off": (["det", "rec"], {"det": {"search": None}, "rec": {"search": None}}),
              "PTQ": (["det", "rec"], {"det": None, "rec": None}),
              "det only": (["det"], {"det": {"search": SEARCHES["layers added after QAT"]}}),
              "rec only": (["rec"], {"rec": {"search": SEARCHES["met before training"]}})})


@pytest.mark.parametrize("case", list(CASES))
def test_report_html_renders_every_shape(tmp_path, case):
    tasks, quant = CASES[case]
    run, report = make_run(tmp_path, tasks, quant)
    html = write_html(run, report).read_text()
    parser = _Tags()
    parser.feed(html)
    assert "Accuracy: float vs quantized" in html and "chart-sizes" in parser.ids
    for task, rec in quant.items():
        if rec and rec.get("search"):
            assert f"chart-search-{task}" in parser.ids, case
            if rec["search"]["ranking"]:
                assert f"chart-sensitivity-{task}" in parser.ids
        if rec:
            assert "chart-loss" in parser.ids


def test_data_is_escaped_everywhere(tmp_path):
    run, report = make_run(tmp_path, ["det", "rec"], {"det": {"search": None}, "rec": {"search": SEARCHES["layers added after QAT"]}})
    html = write_html(run, report).read_text()
    parser = _Tags()
    parser.feed(html)
    assert all(img.get("src", "").startswith("data:image/jpeg;base64,") for img in parser.imgs), parser.imgs
    assert not any(img.get("src") == "x" or "onerror" in img for img in parser.imgs)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and EVIL not in html
