import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.data.labels import read_det_labels, read_rec_labels
from toolkit.data import synth
from toolkit.data.synth import FONTS, find_fonts, synth_dataset

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
    assert summary["params"]["seed"] == 7 and set(summary["sha256"]) == set(FILES)
    assert summary["fonts"] == [{"file": name, "sha256": FONTS[name]} for name in sorted(FONTS)]
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
    assert [p.name for p in fonts] == sorted(FONTS) and {p.parent for p in fonts} == {synth.font_dir()}


def _synth_chars() -> set[str]:
    rs = random.Random(0)
    return set("".join(synth._phrase(rs, 6, 32) for _ in range(5000)))


def test_fonts_draw_every_character_the_synthesiser_writes():
    """Each font maps each character to a glyph named for it, and draws distinct, real glyphs.

    The names catch the maths fonts (Computer Modern's cmmi/cmsy map ASCII codes to Greek
    letters and arrows); the pixels catch placeholder fonts (one glyph for a whole block).
    Computer Modern italic names its '$' glyph "dollar" but draws a pound sign, so it is left
    out of FONTS by inspection, not by this check.
    """
    from fontTools import agl
    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    chars = _synth_chars()
    assert chars >= set("AZaz09$%#-/:.,!() ") and all(" " <= c <= "~" for c in chars)
    for path in find_fonts():
        cmap = TTFont(path, lazy=True).getBestCmap()
        assert all(agl.toUnicode(cmap.get(ord(c), ".notdef")) == c for c in chars), path.name
        font = ImageFont.truetype(str(path), 24)
        shapes = {c: (font.getmask(c).size, bytes(font.getmask(c))) for c in chars - {" "}}
        assert len(set(shapes.values())) == len(shapes), path.name
        assert all(size[0] > 0 for size, _ in shapes.values()), path.name
        assert font.getlength(" ") > 0 and font.getbbox("Hg")[3] > font.getbbox("H")[3], path.name


def test_fonts_added_to_the_system_change_nothing(made, tmp_path, monkeypatch):
    """The same seed gives the same bytes whatever fonts the machine has (fontconfig or ~/.fonts)."""
    out, summary, _ = made
    extra = tmp_path / "home" / ".fonts"
    extra.mkdir(parents=True)
    shutil.copy(synth.font_dir() / "DejaVuSans-Bold.ttf", extra / "AAAExtraSans.ttf")
    (tmp_path / "home" / ".local/share/fonts").mkdir(parents=True)
    shutil.copy(synth.font_dir() / "STIXGeneral.ttf", tmp_path / "home" / ".local/share/fonts" / "Extra2.ttf")
    conf = tmp_path / "fonts.conf"
    conf.write_text(f"""<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><include ignore_missing="yes">/etc/fonts/fonts.conf</include><dir>{extra}</dir>
<cachedir>{tmp_path / "fc-cache"}</cachedir></fontconfig>""")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if shutil.which("fc-list"):  # the system really does offer the extra font now
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True).stdout
        assert str(extra / "AAAExtraSans.ttf") in listed
    again = tmp_path / "again"
    assert synth_dataset(again, **COUNTS, seed=7) == summary
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for f in files:
        assert (out / f).read_bytes() == (again / f).read_bytes(), f


def test_changed_or_missing_fonts_are_refused(tmp_path, monkeypatch):
    fonts = tmp_path / "ttf"
    shutil.copytree(synth.font_dir(), fonts)
    monkeypatch.setattr(synth, "font_dir", lambda: fonts)
    assert find_fonts()[0].parent == fonts
    with open(fonts / "cmr10.ttf", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ToolkitError, match="cmr10.ttf of matplotlib .* differs") as e:
        synth_dataset(tmp_path / "data", 1, 1, 1, 1)
    assert "matplotlib==" in e.value.hint and not (tmp_path / "data").exists()
    (fonts / "cmr10.ttf").unlink()
    with pytest.raises(ToolkitError, match="cmr10.ttf of matplotlib .* is missing"):
        find_fonts()
    monkeypatch.undo()
    monkeypatch.setattr(synth, "find_spec", lambda name: None)
    with pytest.raises(ToolkitError, match="matplotlib, which is not installed"):
        find_fonts()


def test_damaged_dataset_is_rebuilt(tmp_path):
    out = tmp_path / "data"
    summary = synth_dataset(out, 1, 1, 2, 2, seed=1)
    good = (out / "rec/train.txt").read_text()
    (out / "rec/train.txt").write_text("edited\n")
    assert synth_dataset(out, 1, 1, 2, 2, seed=1) == summary
    assert (out / "rec/train.txt").read_text() == good
