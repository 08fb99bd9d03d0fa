import json

import numpy as np
import pytest
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.data.labels import read_det_labels, read_rec_labels

BOX = [[10, 10], [60, 10], [60, 30], [10, 30]]


def det_line(image="img/a.png", boxes=None):
    boxes = boxes if boxes is not None else [{"transcription": "Hello", "points": BOX}]
    return f"{image}\t{json.dumps(boxes)}"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (80, 40), "white").save(tmp_path / "img" / name)
    return tmp_path


def write(path, *lines, bom=False, newline="\n"):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode() + newline.encode())
    return path


def test_good_det_file(root):
    ignore_box = {"transcription": "###", "points": [[0, 0], [5, 0], [5, 5], [0, 5]]}
    label = write(root / "train.txt", det_line(), "", det_line("img/b.png", [ignore_box]),
                  det_line("img/c.png", []), bom=True, newline="\r\n")
    samples, report = read_det_labels(label)
    assert (report.total, report.usable, report.skipped) == (3, 3, [])
    assert samples[0].image == root / "img/a.png"
    assert samples[0].polys[0].dtype == np.float32 and samples[0].polys[0].shape == (4, 2)
    assert samples[0].ignore == [False] and samples[1].ignore == [True] and samples[2].polys == []


def test_good_rec_file_with_data_root(root):
    (root / "labels").mkdir()
    label = write(root / "labels" / "rec.txt", "img/a.png\tHello world", "img/b.png\t$12.50")
    samples, report = read_rec_labels(label, data_root=root, charset=set("Helo wrd$12.50"), max_len=25)
    assert [s.text for s in samples] == ["Hello world", "$12.50"]
    assert samples[1].image == root / "img/b.png" and report.usable == 2


DET_ERRORS = [
    ("img/a.png no tab here", "missing tab"),
    ("\t" + json.dumps([{"points": BOX}]), "missing image path"),
    ("img/a.png\t", "missing label"),
    (det_line("img/missing.png"), "image not found"),
    ('img/a.png\t[{"transcription": "x" "points": []}]', "broken JSON (Expecting ',' delimiter: column 34)"),
    ('img/a.png\t{"points": [[0, 0]]}', "not a JSON list of objects"),
    (det_line(boxes=[{"transcription": "x"}]), "not a JSON list of objects"),
    (det_line(boxes=[{"points": [[0, 0], [5, 5]]}]), "box 1: points are not a list of >= 3"),
    (det_line(boxes=[{"points": [[0, 0], ["5", 0], [5, 5]]}]), "points are not a list"),
    (det_line(boxes=[{"points": BOX}, {"points": [[0, 0], [10, 0], [20, 0.05]]}]), "box 2: degenerate polygon"),
    (det_line(boxes=[{"points": [[0, 0], [10, 10], [10, 0], [0, 10]]}]), "intersects itself"),
]


@pytest.mark.parametrize("bad,reason", DET_ERRORS)
def test_det_error_names_file_and_line(root, bad, reason):
    label = write(root / "det.txt", det_line(), "", bad, det_line("img/b.png"))
    with pytest.raises(ToolkitError) as e:
        read_det_labels(label)
    assert e.value.message.startswith(f"{label}:3: ") and reason in e.value.message
    assert "--skip-bad-labels" in e.value.hint


REC_ERRORS = [
    ("img/a.png Hello", {}, "missing tab"),
    ("img/a.png\t", {}, "empty text"),
    ("img/a.png\t   ", {}, "empty text"),
    ("img/nope.png\tHello", {}, "image not found"),
    ("img/a.png\tcafé ñ", {"charset": set("cafe ")}, "not in the dictionary: 'é' 'ñ'"),
    ("img/a.png\t" + "x" * 30, {"max_len": 25}, "30 characters, longer than the maximum 25"),
]


@pytest.mark.parametrize("bad,kwargs,reason", REC_ERRORS)
def test_rec_error_names_file_and_line(root, bad, kwargs, reason):
    label = write(root / "rec.txt", "img/a.png\tcafe", bad)
    with pytest.raises(ToolkitError) as e:
        read_rec_labels(label, **kwargs)
    assert e.value.message.startswith(f"{label}:2: ") and reason in e.value.message


def test_skip_mode_counts_skipped(root):
    label = write(root / "rec.txt", "img/a.png\tone", "img/x.png\ttwo", "img/b.png\t", "img/c.png\tfour")
    samples, report = read_rec_labels(label, on_error="skip")
    assert [s.text for s in samples] == ["one", "four"]
    assert (report.total, report.usable, len(report.skipped)) == (4, 2, 2)
    assert report.skipped[0].startswith(f"{label}:2: image not found")
    assert report.skipped[1] == f"{label}:3: empty text"


def test_broken_json_among_good_lines(root):
    lines = [det_line(), det_line("img/b.png"), det_line("img/c.png")[:-3], det_line("img/c.png")]
    label = write(root / "det.txt", *lines)
    with pytest.raises(ToolkitError, match=r"det.txt:3: broken JSON"):
        read_det_labels(label)
    samples, report = read_det_labels(label, on_error="skip")
    assert [s.image.name for s in samples] == ["a.png", "b.png", "c.png"]
    assert report.usable == 3 and len(report.skipped) == 1 and ":3: broken JSON" in report.skipped[0]


def test_no_usable_samples(root):
    label = write(root / "rec.txt", "img/x.png\tone", "img/a.png")
    with pytest.raises(ToolkitError) as e:
        read_rec_labels(label, on_error="skip")
    assert e.value.message == f"{label}: no usable samples (2 lines, 2 skipped)"
    assert "image not found" in e.value.hint and "missing tab" in e.value.hint


def test_empty_file(root):
    with pytest.raises(ToolkitError, match="no usable samples"):
        read_det_labels(write(root / "det.txt", "", ""))


def test_missing_label_file(tmp_path):
    with pytest.raises(ToolkitError, match="label file not found: .*nope.txt"):
        read_det_labels(tmp_path / "nope.txt")


def test_not_utf8(root):
    label = root / "rec.txt"
    label.write_bytes(b"img/a.png\tcaf\xe9\n")
    with pytest.raises(ToolkitError, match="not UTF-8"):
        read_rec_labels(label)
