"""The real-page dataset: pinned Debian manuals, rendered and labelled from their text layer.

Builds download about 5 MB from the Debian mirror (once per test session) and render 40
pages; a build takes a few seconds.
"""

import hashlib
import io
import json
import lzma
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from toolkit.data import realpages
from toolkit.data.labels import read_det_labels, read_rec_labels
from toolkit.data.realpages import SOURCES, build_real_pages, deb_member, fetch_deb, spell
from toolkit.data.stored import stored_summary
from toolkit.errors import ToolkitError

FILES = ("det/train.txt", "det/eval.txt", "rec/train.txt", "rec/eval.txt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("debs")


@pytest.fixture(scope="module")
def made(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("real") / "data"
    calls = []
    summary = build_real_pages(out, cache, progress=lambda done, total: calls.append((done, total)))
    return out, summary, calls


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_summary_and_progress(made):
    out, summary, calls = made
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "det", "rec"]
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8")) == summary
    assert summary["kind"] == "real" and summary["name"] and set(summary["sha256"]) == set(FILES)
    assert {"params", "counts", "sources"} <= set(summary)
    for record, source in zip(summary["sources"], SOURCES):
        assert record["url"].startswith("https://deb.debian.org/debian/pool/main/")
        assert record["sha256"] == source.sha256 and record["version"] == source.version
        assert [int(p) for p in record["pages"]["eval"]] == list(source.eval)
        assert all(130 <= dpi <= 300 for split in ("train", "eval") for dpi in record["pages"][split].values())
    total = len(SOURCES) + sum(len(s.train) + len(s.eval) for s in SOURCES)
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert not list(out.parent.glob(".data.*"))  # temp dir moved into place, nothing left behind


def test_labels_parse_and_sizes(made):
    out, summary, _ = made
    counts = summary["counts"]
    charset = set(realpages.dictionary())
    for split in ("train", "eval"):
        pages, report = read_det_labels(out / "det" / f"{split}.txt")
        assert not report.skipped and len(pages) == counts[f"det_{split}"]
        kept = sum(not i for p in pages for i in p.ignore)
        assert kept == counts[f"det_boxes_{split}"]
        for page in pages[:3]:
            w, h = Image.open(page.image).size
            for poly in page.polys:
                assert poly.shape == (4, 2) and (poly >= 0).all()
                assert (poly[:, 0] < w).all() and (poly[:, 1] < h).all()
        lines, report = read_rec_labels(out / "rec" / f"{split}.txt", charset=charset)
        assert not report.skipped and len(lines) == counts[f"rec_{split}"]
    # Big enough to judge with, and train at least as big.
    assert counts["det_eval"] >= 12 and counts["det_boxes_eval"] >= 300 and counts["rec_eval"] >= 300
    assert counts["det_train"] >= counts["det_eval"] and counts["rec_train"] >= counts["rec_eval"]


def test_splits_are_disjoint_pages_and_mix_typographies(made):
    out, summary, _ = made
    for source in SOURCES:
        assert source.eval and source.train and not set(source.eval) & set(source.train)
    assert len({s.typography for s in SOURCES}) >= 2
    images = {}
    for split in ("train", "eval"):
        pages, _ = read_det_labels(out / "det" / f"{split}.txt")
        images[split] = {p.image.name for p in pages}
        assert {name.split("_p")[0] for name in images[split]} == {s.package for s in SOURCES}
    assert not images["train"] & images["eval"]
    train, _ = read_rec_labels(out / "rec/train.txt")
    evals, _ = read_rec_labels(out / "rec/eval.txt")
    assert not {s.text for s in train} & {s.text for s in evals}  # eval measures reading, not recall
    rec_pages = {split: {s.image.name.rsplit("_", 1)[0] + ".jpg" for s in samples}
                 for split, samples in (("train", train), ("eval", evals))}
    assert rec_pages["train"] <= images["train"] and rec_pages["eval"] <= images["eval"]


def test_text_is_what_a_reader_writes(made):
    out, _, _ = made
    samples = [s for split in ("train", "eval") for s in read_rec_labels(out / "rec" / f"{split}.txt")[0]]
    texts = [s.text for s in samples]
    assert all(t == t.strip() and "  " not in t for t in texts)
    assert not any(c in t for t in texts for c in "\ufb00\ufb01\ufb02\ufb03\ufb04\u2013\u2212\x02\xa0")
    assert sum(len(t) > 25 for t in texts) > len(texts) / 2  # real lines are long; nothing is cut at 25
    assert max(len(t) for t in texts) > 80
    assert any(" " in t for t in texts) and any("-" in t for t in texts)
    for s in samples[::97]:
        w, h = Image.open(s.image).size
        assert 18 <= h <= 110 and w >= h / 2


def test_same_call_twice_is_byte_identical(made, cache, tmp_path, monkeypatch):
    out, summary, _ = made
    import requests

    def no_network(*a, **k):
        raise AssertionError("the cached downloads must be reused")

    monkeypatch.setattr(requests, "get", no_network)
    again = tmp_path / "again"
    assert build_real_pages(again, cache) == summary
    assert _digest(again) == _digest(out)


def test_second_call_is_noop(made, cache):
    out, summary, _ = made
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    start = time.perf_counter()
    assert build_real_pages(out, cache) == summary
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


def test_damaged_dataset_is_not_reused(made, tmp_path):
    out, summary, _ = made
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    assert stored_summary(copy, "real") == summary
    (copy / "rec/eval.txt").write_text("edited\n")
    assert stored_summary(copy, "real") == {}  # ours but damaged: rebuilt in place


def test_corrupt_cached_download_is_fetched_again(made, cache, tmp_path):
    source = min(SOURCES, key=lambda s: s.size)
    mine = tmp_path / "cache"
    mine.mkdir()
    (mine / source.filename).write_bytes(b"truncated")
    path = fetch_deb(source, mine)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == source.sha256
    assert sorted(p.name for p in mine.iterdir()) == [source.filename]


def test_wrong_download_is_a_clear_error(tmp_path, monkeypatch):
    import requests

    class Served:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def raise_for_status(self):
            pass

        def iter_content(self, size):
            yield b"not the pinned package"

    monkeypatch.setattr(requests, "get", Served)
    source = SOURCES[0]
    with pytest.raises(ToolkitError, match=re.escape(source.filename) + f": sha256 is .*expected {source.sha256}") as e:
        fetch_deb(source, tmp_path)
    assert str(tmp_path) in e.value.hint
    assert not list(tmp_path.iterdir())  # nothing half-downloaded is left to be mistaken for the file


def test_deb_member_reads_an_ar_archive(tmp_path):
    import gzip

    def tar_xz(files: dict) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return lzma.compress(raw.getvalue())

    def member(name: str, data: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        return header + data + (b"\n" if len(data) % 2 else b"")

    pdf = b"%PDF-1.4 pretend"
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"!<arch>\n" + member("debian-binary", b"2.0\n")
                    + member("control.tar.xz", tar_xz({"./control": b"Package: x\n"}))
                    + member("data.tar.xz", tar_xz({"./usr/share/doc/x/m.pdf.gz": gzip.compress(pdf)})))
    assert deb_member(deb, "./usr/share/doc/x/m.pdf.gz") == pdf
    with pytest.raises(ToolkitError, match="has no file ./usr/share/doc/x/other.pdf"):
        deb_member(deb, "./usr/share/doc/x/other.pdf")
    (tmp_path / "bad.deb").write_bytes(b"<html>not found</html>")
    with pytest.raises(ToolkitError, match="not a Debian package"):
        deb_member(tmp_path / "bad.deb", "./x")


def test_spelling_of_text_layer_characters():
    charset = realpages.dictionary()
    assert spell("\ufb01", charset) == "fi" and spell("\ufb03", charset) == "ffi"  # ligatures
    assert spell("\u2013", charset) == "-" and spell("\u2212", charset) == "-" and spell("\x02", charset) == "-"
    assert spell("\u201c", charset) == "\u201c" and spell("\u2019", charset) == "\u2019"  # in the dictionary
    assert spell("\u2014", charset) == "\u2014" and spell("\u2022", charset) == "\u2022"
    assert spell("\ue000", charset) == "" and spell("\u00a0", charset) == " "  # private use: unreadable


def test_refuses_foreign_directory_and_other_renderer(tmp_path, cache, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="not a real-page dataset"):
        build_real_pages(tmp_path / "mine", cache)
    from toolkit.data.synth import synth_dataset

    synth_dataset(tmp_path / "synth", 1, 1, 1, 1)
    with pytest.raises(ToolkitError, match="not a real-page dataset"):
        build_real_pages(tmp_path / "synth", cache)
    monkeypatch.setattr(realpages, "PYPDFIUM2_VERSION", "0.0")
    with pytest.raises(ToolkitError, match="pypdfium2==0.0"):
        build_real_pages(tmp_path / "new", cache)


def test_system_fonts_are_never_consulted(made, cache):
    """A PDF that does not embed its fonts (the FOP manual) must not pick up the machine's fonts."""
    import pypdfium2 as pdfium

    class Spy(pdfium.PdfSysfontBase):
        asked = 0

        def MapFont(self, *args):
            Spy.asked += 1
            return super().MapFont(*args)

    source = next(s for s in SOURCES if "FOP" in s.typography)
    data = deb_member(fetch_deb(source, cache), source.pdf)
    Spy().setup()
    plain = pdfium.PdfDocument(data)
    plain[source.eval[0] - 1].render(scale=0.5)
    plain.close()
    assert Spy.asked  # pdfium would ask the system for Times and Helvetica ...
    Spy.asked = 0
    pdf = realpages.open_pdf(data)
    realpages.render_page(pdf, source.eval[0] - 1, 72, realpages.dictionary())
    pdf.close()
    assert Spy.asked == 0  # ... but not for the dataset
