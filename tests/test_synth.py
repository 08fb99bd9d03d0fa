import json
import time
from pathlib import Path

import pytest
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.data.labels import read_det_labels, read_rec_labels
from toolkit.data.synth import find_fonts, synth_dataset

COUNTS = dict(det_train=4, det_eval=2, rec_train=20, rec_eval=10)
FILES = ("det/train.txt", "det/eval.txt", "rec/train.txt", "rec/eval.txt")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    calls = []
    summary = synth_dataset(out, **COUNTS, seed=7, progress=lambda done, total: calls.append((done, total)))
    return out, summary, calls


def test_layout_and_summary(made):
    out, summary, calls = made
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "det", "rec"]
    assert len(list((out / "det/images").glob("*.jpg"))) == 6
    assert len(list((out / "rec/images").glob("*.jpg"))) == 30
    assert json.loads((out / "dataset.json").read_text()) == summary
    assert summary["params"]["seed"] == 7 and summary["fonts"] and set(summary["sha256"]) == set(FILES)
    assert calls[-1] == (36, 36) and [c[0] for c in calls] == list(range(1, 37))
    assert not list(out.parent.glob(".data.*"))  # temp dir moved into place, nothing left behind


def test_det_labels_parse_and_boxes_inside(made):
    out, summary, _ = made
    for split, n in (("train", 4), ("eval", 2)):
        samples, report = read_det_labels(out / "det" / f"{split}.txt")
        assert report.usable == n and not report.skipped
        for s in samples:
            w, h = Image.open(s.image).size
            assert 480 <= w <= 800 and 480 <= h <= 800 and 3 <= len(s.polys) <= 8
            for poly in s.polys:
                assert poly.shape == (4, 2)
                assert (poly >= 0).all() and (poly[:, 0] < w).all() and (poly[:, 1] < h).all()
                assert poly[0].sum() < poly[2].sum()  # starts top-left


def test_rec_labels_parse_and_splits_disjoint(made):
    out, _, _ = made
    charset = {chr(c) for c in range(32, 127)}
    train, _ = read_rec_labels(out / "rec/train.txt", charset=charset, max_len=25)
    evals, _ = read_rec_labels(out / "rec/eval.txt", charset=charset, max_len=25)
    assert len(train) == 20 and len(evals) == 10
    train_texts = [s.text for s in train]
    assert len(set(train_texts)) == 20 and not set(train_texts) & {s.text for s in evals}
    assert all(1 <= len(t.split()) <= 5 and t == t.strip() for t in train_texts)
    assert {s.image for s in train}.isdisjoint({s.image for s in evals})
    for s in train[:5]:
        assert 20 <= Image.open(s.image).height <= 100


def test_same_seed_is_byte_identical(made, tmp_path):
    out, _, _ = made
    again = tmp_path / "again"
    synth_dataset(again, **COUNTS, seed=7)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (out / f).read_bytes() == (again / f).read_bytes(), f


def test_other_seed_differs(made, tmp_path):
    out, _, _ = made
    other = synth_dataset(tmp_path / "other", **COUNTS, seed=8)
    assert other["sha256"] != json.loads((out / "dataset.json").read_text())["sha256"]


def test_second_call_is_noop(made):
    out, summary, _ = made
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    start = time.perf_counter()
    assert synth_dataset(out, **COUNTS, seed=7) == summary
    assert time.perf_counter() - start < 1.0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


def test_changed_params_rebuild_in_place(tmp_path):
    out = tmp_path / "data"
    synth_dataset(out, 1, 1, 2, 2, seed=1)
    summary = synth_dataset(out, 1, 1, 3, 2, seed=1)
    assert summary["params"]["rec_train"] == 3
    assert len((out / "rec/train.txt").read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="not a synthetic dataset"):
        synth_dataset(tmp_path / "data", 1, 1, 1, 1)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ToolkitError, match="not a synthetic dataset"):
        synth_dataset(tmp_path / "file", 1, 1, 1, 1)
    assert (tmp_path / "file").read_text() == "mine"
    with pytest.raises(ToolkitError, match="rec_eval must be"):
        synth_dataset(tmp_path / "x", 1, 1, 1, -1)


def test_find_fonts_sorted_existing():
    fonts = find_fonts()
    assert fonts == sorted(fonts) and all(isinstance(p, Path) and p.is_file() for p in fonts)


def test_damaged_dataset_is_rebuilt(tmp_path):
    out = tmp_path / "data"
    summary = synth_dataset(out, 1, 1, 2, 2, seed=1)
    good = (out / "rec/train.txt").read_text()
    (out / "rec/train.txt").write_text("edited\n")
    assert synth_dataset(out, 1, 1, 2, 2, seed=1) == summary
    assert (out / "rec/train.txt").read_text() == good
