"""Real typeset pages (PDF manuals from pinned Debian packages) as a PaddleOCR det + rec dataset.

Synthetic images do not show how a quantised model reads real documents: an int8 recogniser
that loses a point on synthetic lines lost four on real manual pages. This builds our own set
of real pages, reproducibly: each source is a Debian .deb pinned by URL and sha256, its PDF is
rendered with pdfium (the pinned `pypdfium2` wheel, so neither poppler nor the system's fonts
are involved), and line boxes and text come from the PDF's text layer, kept only where the
rendered ink agrees with them. Lines the text layer cannot vouch for stay on the det pages as
"###" (don't care) regions, so a detector is neither taught nor scored on guesses.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import tarfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from toolkit.digest import sha256_file
from toolkit.errors import ToolkitError
from toolkit.data.stored import label_hashes, reuse_or_claim
from toolkit.rundir import atomic_dir

REAL_VERSION = 1  # bump when the output changes, so cached datasets are rebuilt
NAME = "debian-manuals"
POOL = "https://deb.debian.org/debian/pool/main/"
PYPDFIUM2_VERSION = "5.15.2"  # the renderer is part of the data: another pdfium draws other pixels
IGNORE = "###"


@dataclass(frozen=True)
class Source:
    """One PDF manual inside one pinned Debian package, and the pages taken from it (1-based)."""

    package: str
    version: str
    path: str  # below POOL
    sha256: str
    size: int
    pdf: str  # member of the package's data.tar; gzip-compressed if it ends in .gz
    typography: str
    license: str
    train: tuple[int, ...]
    eval: tuple[int, ...]
    dpi: tuple[int, ...]  # render resolutions, cycled over each split's pages

    @property
    def url(self) -> str:
        return POOL + self.path

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def pages(self) -> list[tuple[str, int, int]]:
        """(split, page, dpi) in a fixed order; the DPIs cycle within each split, so both get every size."""
        return [(split, page, self.dpi[i % len(self.dpi)])
                for split, pages in (("train", self.train), ("eval", self.eval)) for i, page in enumerate(pages)]

    def record(self) -> dict:
        """What dataset.json says about this source."""
        return {"package": self.package, "version": self.version, "url": self.url, "sha256": self.sha256,
                "size": self.size, "pdf": self.pdf, "typography": self.typography, "license": self.license,
                "pages": {split: {str(page): dpi for s, page, dpi in self.pages() if s == split}
                          for split in ("train", "eval")}}


# Bookworm (Debian 12) main. Four typographies: LaTeX, Texinfo, DocBook via Apache FOP with
# the PDF base-14 fonts (not embedded: pdfium draws its own bundled ones), DocBook via dblatex
# with embedded Liberation fonts. Pages are running text, lists, option tables and code.
SOURCES: tuple[Source, ...] = (
    Source("nauty-doc", "2.8.6+ds-2", "n/nauty/nauty-doc_2.8.6+ds-2_all.deb",
           "3b562ee966760117d74eef450e33592997f7f4da4e405c50e6bff5e757b7c223", 539068,
           "./usr/share/doc/nauty/nug28.pdf", "LaTeX (pdfTeX, Computer Modern 12pt)", "Apache-2.0",
           train=(8, 21, 34, 52, 63, 84), eval=(10, 36, 65, 93), dpi=(135, 170, 205, 240)),
    Source("sbcl-doc", "2:2.2.9-1", "s/sbcl/sbcl-doc_2.2.9-1_all.deb",
           "cbb347501ecb4cd6011b805495684b41375a9efbee45f3c33a388da910fa01a0", 1526540,
           "./usr/share/doc/sbcl/sbcl.pdf.gz", "Texinfo (pdfTeX, Computer Modern 10pt)", "public-domain",
           train=(13, 30, 51, 60, 95, 131), eval=(21, 40, 70, 110), dpi=(160, 205, 250, 295)),
    Source("xorg-docs", "1:1.7.1-1.2", "x/xorg-docs/xorg-docs_1.7.1-1.2_all.deb",
           "4842f9de2722d4a1998d8c8b1d14ef475fbc5e16db7d0954b4c0f5f72bd67440", 1160436,
           "./usr/share/doc/xorg-docs/icccm/icccm.pdf.gz",
           "DocBook XSL + Apache FOP (Times, Helvetica, Courier)", "MIT",
           train=(5, 9, 20, 33, 41, 53), eval=(6, 23, 46, 60), dpi=(160, 205, 250, 295)),
    Source("debian-reference-en", "2.100", "d/debian-reference/debian-reference-en_2.100_all.deb",
           "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f", 1704872,
           "./usr/share/debian-reference/debian-reference.en.pdf",
           "DocBook + dblatex (XeTeX, Liberation Serif/Sans/Mono)", "GPL-2+",
           train=(26, 41, 72, 119, 166, 210), eval=(30, 63, 159, 196), dpi=(160, 205, 250, 295)),
)

# Characters a reader writes differently from the text layer (the dictionary has no en dash,
# minus or soft hyphen; pdfium marks a hyphen at a line break as U+0002).
_SPELLING = {"\u2013": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u00ad": "-", "\x02": "-",
             "\u02c6": "^", "\u02dc": "~", "\u2217": "*", "\u00a0": " ", "\u2009": " ", "\u202f": " "}
_RGB_INK = 160  # a pixel darker than this is ink (text is black or dark; code boxes are light grey)


# ---------------------------------------------------------------- downloads

def fetch_deb(source: Source, cache_dir: Path) -> Path:
    """The source's .deb in cache_dir, downloaded once and verified by sha256 every time."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / source.filename
    if path.is_file() and sha256_file(path) == source.sha256:
        return path
    import requests

    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with requests.get(source.url, stream=True, timeout=60) as r:
            r.raise_for_status()
            with open(tmp, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
    except (OSError, requests.RequestException) as e:
        tmp.unlink(missing_ok=True)
        raise ToolkitError(f"cannot download {source.url}: {e}",
                           hint=f"check the network, or put {source.filename} (sha256 {source.sha256}) "
                                f"into {cache_dir} yourself") from None
    got = sha256_file(tmp)
    if got != source.sha256:
        tmp.unlink(missing_ok=True)
        raise ToolkitError(f"{source.url}: sha256 is {got}, expected {source.sha256}",
                           hint=f"the mirror served a different file; retry later, or put the pinned "
                                f"{source.filename} into {cache_dir} yourself")
    os.replace(tmp, path)
    return path


def deb_member(deb: Path, member: str) -> bytes:
    """One file from a .deb (an `ar` archive whose data.tar.{xz,gz} holds the files), no dpkg needed."""
    data = Path(deb).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ToolkitError(f"{deb} is not a Debian package (no ar header)", hint=f"delete {deb} and run again")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos:pos + 16].decode("ascii", "replace").strip().rstrip("/")
        size = int(data[pos + 48:pos + 58].decode("ascii").strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".xz"):
            body = lzma.decompress(body)
        elif name.endswith(".gz"):
            body = gzip.decompress(body)
        elif name != "data.tar":
            raise ToolkitError(f"{deb}: {name} is compressed in a format Python cannot read",
                               hint="pin a package built with xz or gzip compression")
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise ToolkitError(f"{deb} has no file {member}", hint="fix the pinned source's pdf path")
            out = f.read()
        return gzip.decompress(out) if member.endswith(".gz") else out
    raise ToolkitError(f"{deb} has no data.tar member", hint=f"delete {deb} and run again")


# ---------------------------------------------------------------- text layer

@dataclass
class _Char:
    text: str  # as a reader writes it ('' for a character the dictionary cannot spell)
    raw: str
    box: tuple[float, float, float, float]  # ink box, pixels (x0, y0, x1, y1), y down
    loose: tuple[float, float, float, float]  # advance box: its edges are where the spacing is
    base: float  # baseline y, pixels
    em: float  # font size, pixels
    trusted: bool  # unicode mapped cleanly, upright


@dataclass
class _Line:
    chars: list[_Char]
    text: str = ""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    reason: str | None = None  # why it is not transcribed (None: kept)
    em: float = 0.0  # median font size, pixels


def dictionary() -> frozenset[str]:
    """The recogniser's characters: ppocr_keys_v1.txt from the installed `unstructured_paddleocr`, plus space."""
    return _dictionary(_dictionary_path())


def _dictionary_path() -> Path:
    from toolkit.engine import ppocr_root

    path = ppocr_root() / "ppocr/utils/ppocr_keys_v1.txt"
    if not path.is_file():
        raise ToolkitError(f"the recogniser's dictionary is missing: {path}",
                           hint="reinstall unstructured-paddleocr==2.10.0 with --no-deps")
    return path


@lru_cache(maxsize=4)
def _dictionary(path: Path) -> frozenset[str]:
    chars = {line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()}
    return frozenset((chars - {""}) | {" "})


def spell(ch: str, charset: frozenset[str]) -> str:
    """How a reader writes one text-layer character, or '' if the dictionary cannot spell it.

    Kept as is when the dictionary has it (curly quotes, em dash, bullet); else the usual
    reading (ligatures split, en dash and minus as '-'); else nothing.
    """
    if ch in charset:
        return ch
    out = _SPELLING.get(ch) or unicodedata.normalize("NFKC", ch)
    return out if out and all(c in charset for c in out) else ""


def _chars(page, scale: float, charset: frozenset[str]) -> list[_Char]:
    """Every visible character of the page's text layer, in content order, in pixel coordinates."""
    import ctypes

    import pypdfium2.raw as pr

    left, bottom, right, top = page.get_bbox()  # what render() draws (get_cropbox() ignores inherited boxes)
    px = lambda x0, y0, x1, y1: ((x0 - left) * scale, (top - y1) * scale, (x1 - left) * scale, (top - y0) * scale)
    tp = page.get_textpage()
    try:
        l, r, b, t = (ctypes.c_double() for _ in range(4))
        ox, oy = ctypes.c_double(), ctypes.c_double()
        rect = pr.FS_RECTF()
        out = []
        for i in range(tp.count_chars()):
            code = pr.FPDFText_GetUnicode(tp.raw, i)
            if pr.FPDFText_IsGenerated(tp.raw, i) or code in (0x20, 0x0D, 0x0A):
                continue  # spacing comes from the geometry below, not from the extractor's guesses
            raw = chr(code) if code < 0x110000 else "\ufffd"
            pr.FPDFText_GetCharBox(tp.raw, i, l, r, b, t)
            pr.FPDFText_GetLooseCharBox(tp.raw, i, rect)
            pr.FPDFText_GetCharOrigin(tp.raw, i, ox, oy)
            angle = pr.FPDFText_GetCharAngle(tp.raw, i)
            loose = px(rect.left, rect.bottom, rect.right, rect.top)
            em = pr.FPDFText_GetFontSize(tp.raw, i) * scale
            if em <= scale:  # no usable size: the advance box is about one em high
                em = loose[3] - loose[1]
            text = spell(raw, charset)
            printable = code not in (0xFFFD, 0xFFFE, 0xFFFF) and (raw == "\x02" or unicodedata.category(raw)[0] != "C")
            trusted = (printable and not pr.FPDFText_HasUnicodeMapError(tp.raw, i)
                       and min(abs(angle), abs(angle - 2 * np.pi)) < 1e-3)
            out.append(_Char(text, raw, px(l.value, b.value, r.value, t.value), loose,
                             (top - oy.value) * scale, em, trusted))
        return out
    finally:
        tp.close()


# Gaps between advance boxes, in em: letters sit at <= 0.05 (kerning), word spaces at >= 0.1
# (tightly justified Times) and usually 0.25-0.6; table columns, bullets and section numbers
# stand further apart. A line is cut where a detector would see two boxes.
LETTER_EM, SPACE_EM, SPLIT_EM = 0.05, 0.09, 1.2


def _group(chars: list[_Char]) -> list[_Line]:
    """Consecutive characters on one baseline, cut at column-wide gaps."""
    lines: list[_Line] = []
    cur: list[_Char] = []
    for c in chars:
        if cur:
            p, em = cur[-1], max(cur[-1].em, c.em)
            if (abs(c.base - cur[0].base) < 0.4 * em and c.loose[0] > p.loose[0] - 0.2 * em
                    and c.loose[0] - p.loose[2] < SPLIT_EM * em):
                cur.append(c)
                continue
            lines.append(_Line(cur))
        cur = [c]
    if cur:
        lines.append(_Line(cur))
    return lines


def _spell_line(line: _Line, size: tuple[int, int]) -> None:
    """Text (single spaces where the page has word gaps), box, and whatever makes it unreadable."""
    cs = line.chars
    text = [cs[0].text]
    ambiguous = False
    for p, c in zip(cs, cs[1:]):
        gap = (c.loose[0] - p.loose[2]) / max(p.em, c.em)
        if gap > SPACE_EM:
            text.append(" ")
        elif gap > LETTER_EM:
            ambiguous = True
        text.append(c.text)
    line.text = " ".join("".join(text).split())
    em = float(np.median([c.em for c in cs]))
    base = float(np.median([c.base for c in cs]))
    x0, y0 = min(c.box[0] for c in cs), min(min(c.box[1] for c in cs), base - 0.66 * em)
    x1, y1 = max(c.box[2] for c in cs), max(max(c.box[3] for c in cs), base)
    line.box = (int(np.floor(x0)) - 1, int(np.floor(y0)) - 1, int(np.ceil(x1)) + 1, int(np.ceil(y1)) + 1)
    line.em = em
    w, h = size
    if not all(c.trusted for c in cs):
        line.reason = "unmapped"  # text layer without a clean unicode mapping, or rotated
    elif any(not c.text for c in cs):
        line.reason = "charset"
    elif any(abs(c.base - base) > 0.12 * em for c in cs):
        line.reason = "baseline"  # super/subscripts: no single reading
    elif ambiguous:
        line.reason = "spacing"
    elif not any(ch.isalnum() for ch in line.text):
        line.reason = "no-word"  # a lone bullet, rule or dot leader
    elif line.box[0] < 2 or line.box[1] < 2 or line.box[2] > w - 3 or line.box[3] > h - 3:
        line.reason = "edge"


# Ink in a line box outside its glyph boxes: round letters overshoot by a pixel or two (under
# 0.12 em); an underscore drawn as a rule, or a formula's bar, is longer.
STRAY_EM = 0.2


def _margin(line: _Line) -> int:
    """Crop margin around a line, as a detector's box leaves it: a few pixels, more for bigger text."""
    return int(np.clip(round(0.12 * (line.box[3] - line.box[1])), 2, 6))


def _check_ink(lines: list[_Line], ink: np.ndarray) -> None:
    """Keep a line only where the rendered page agrees with the text layer.

    Each character's box must hold ink (else the text is invisible, e.g. white or clipped), the
    line box must hold no ink its characters do not explain (rules, formulas drawn as paths,
    overprinted figures), and the margin a crop adds must be mostly paper.
    """
    boxes = np.array([ln.box for ln in lines]).reshape(-1, 4)
    for i, ln in enumerate(lines):
        if ln.reason:
            continue
        x0, y0, x1, y1 = ln.box
        others = np.delete(boxes, i, 0)
        if len(others) and ((others[:, 0] < x1) & (others[:, 2] > x0) & (others[:, 1] < y1) & (others[:, 3] > y0)).any():
            ln.reason = "overlap"
            continue
        explained = np.zeros((y1 - y0, x1 - x0), bool)
        for c in ln.chars:
            cx0, cy0 = int(np.floor(c.box[0])) - x0, int(np.floor(c.box[1])) - y0
            cx1, cy1 = int(np.ceil(c.box[2])) - x0, int(np.ceil(c.box[3])) - y0
            if c.raw.strip() and not ink[y0 + cy0:y0 + cy1, x0 + cx0:x0 + cx1].any():
                ln.reason = "no-ink"
                break
            explained[max(cy0 - 1, 0):cy1 + 1, max(cx0 - 1, 0):cx1 + 1] = True
        if ln.reason:
            continue
        inside = ink[y0:y1, x0:x1]
        _, _, stray, _ = cv2.connectedComponentsWithStats((inside & ~explained).astype(np.uint8), connectivity=8)
        if len(stray) > 1 and stray[1:, 2:4].max() >= STRAY_EM * ln.em:
            ln.reason = "stray-ink"  # e.g. TeX's \_ is a rule, not a character: the text would lack it
            continue
        m = _margin(ln)
        ring = ink[max(y0 - m, 0):y1 + m, max(x0 - m, 0):x1 + m]
        ring_area = ring.size - inside.size
        if ring.sum() - inside.sum() > 0.03 * ring_area:
            ln.reason = "crowded"


def _ignore_regions(lines: list[_Line], ink: np.ndarray, em: float) -> list[tuple[int, int, int, int]]:
    """Boxes around ink no text line explains (figures, text drawn as paths): don't-care for det.

    Straight rules and frames are left out: a detector does not read them as text, and a
    frame's bounding box would swallow the lines inside it.
    """
    rest = ink.copy()
    for ln in lines:
        m = _margin(ln)
        x0, y0, x1, y1 = ln.box
        rest[max(y0 - m, 0):y1 + m, max(x0 - m, 0):x1 + m] = False
    k = max(int(2 * em), 3)
    u8 = rest.astype(np.uint8)
    rules = cv2.morphologyEx(u8, cv2.MORPH_OPEN, np.ones((1, k), np.uint8)) | \
        cv2.morphologyEx(u8, cv2.MORPH_OPEN, np.ones((k, 1), np.uint8))
    u8 &= 1 - rules
    c = max(int(0.5 * em), 1)
    u8 = cv2.morphologyEx(u8, cv2.MORPH_CLOSE, np.ones((c, c), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(u8, connectivity=8)
    out = []
    for x, y, bw, bh, area in stats[1:]:
        if max(bw, bh) >= 0.5 * em and area >= 4:
            out.append((int(x), int(y), int(x + bw), int(y + bh)))
    return sorted(out, key=lambda b: (b[1], b[0]))


@dataclass
class PageResult:
    image: np.ndarray  # RGB
    lines: list[_Line]  # every text-layer line; reason None where it is transcribed
    ignore: list[tuple[int, int, int, int]]  # ink no line explains

    def kept(self) -> list[_Line]:
        return [ln for ln in self.lines if ln.reason is None]


def open_pdf(data: bytes):
    """A pypdfium2 document that draws only with its own and pdfium's built-in fonts.

    pdfium otherwise substitutes a font a PDF does not embed (the FOP manual's Times and
    Helvetica) from the machine's font folders when one has a matching name, e.g. "Times New
    Roman": the same page would then render differently on another machine. Process-wide.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pr

    pr.FPDF_SetSystemFontInfo(None)
    return pdfium.PdfDocument(data)


def render_page(pdf, index: int, dpi: int, charset: frozenset[str]) -> PageResult:
    """One page (0-based index) of a document from open_pdf, rendered at dpi, its lines judged against the ink."""
    page = pdf[index]
    if page.get_rotation() % 360:
        raise ToolkitError(f"page {index + 1} is rotated", hint="pin an upright page")
    scale = dpi / 72.0
    image = page.render(scale=scale, rev_byteorder=True, may_draw_forms=False, draw_annots=False).to_numpy()
    image = np.ascontiguousarray(image[..., :3])
    h, w = image.shape[:2]
    ink = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) < _RGB_INK
    lines = _group(_chars(page, scale, charset))
    for ln in lines:
        _spell_line(ln, (w, h))
    _check_ink(lines, ink)
    em = float(np.median([ln.em for ln in lines])) if lines else 10 * scale
    ignore = _ignore_regions(lines, ink, em)
    for ln in lines:  # a line touching unexplained ink may be part of a figure
        x0, y0, x1, y1 = ln.box
        if ln.reason is None and any(a < x1 and c > x0 and b < y1 and d > y0 for a, b, c, d in ignore):
            ln.reason = "figure"
    return PageResult(image, lines, ignore)


# ---------------------------------------------------------------- dataset

PAGE_QUALITY, CROP_QUALITY = 92, 95


def build_real_pages(out_dir: Path, cache_dir: Path,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Write (or reuse) the real-page det+rec dataset under out_dir and return its summary.

    Downloads go to cache_dir and are reused while their sha256 matches. The set is built in a
    temporary sibling directory and moved into place, so an interrupted run never leaves a
    half-written dataset that a later run would take for a finished one.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    params = _params()
    sources = [s.record() for s in SOURCES]
    total = len(SOURCES) + sum(len(s.pages()) for s in SOURCES)
    existing = reuse_or_claim(out_dir, "real", "a real-page dataset",
                              lambda s: s.get("params") == params and s.get("sources") == sources, total, progress)
    if existing:
        return existing
    step = _Progress(progress, total)
    pdfs = {}
    for source in SOURCES:
        pdfs[source.package] = deb_member(fetch_deb(source, cache_dir), source.pdf)
        step()
    with atomic_dir(out_dir) as tmp:  # an interrupted build never leaves a half-written dataset
        summary = _build(tmp, params, sources, pdfs, step)
    return summary


class _Progress:
    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.callback:
            self.callback(self.done, self.total)


def _params() -> dict:
    """Everything besides the sources that decides the output bytes."""
    try:
        from pypdfium2.version import PDFIUM_INFO, PYPDFIUM_INFO
    except ImportError:
        raise ToolkitError("real-page data needs the PDF renderer pypdfium2, which is not installed",
                           hint=f"pip install pypdfium2=={PYPDFIUM2_VERSION}") from None
    if str(PYPDFIUM_INFO) != PYPDFIUM2_VERSION:
        raise ToolkitError(f"pypdfium2 {PYPDFIUM_INFO} is installed; the real-page data is defined with "
                           f"{PYPDFIUM2_VERSION} (another pdfium draws other pixels)",
                           hint=f"pip install pypdfium2=={PYPDFIUM2_VERSION}")
    return {"version": REAL_VERSION, "renderer": f"pypdfium2 {PYPDFIUM_INFO} (pdfium {PDFIUM_INFO.build})",
            "dictionary_sha256": sha256_file(_dictionary_path()),
            "jpeg_quality": {"page": PAGE_QUALITY, "crop": CROP_QUALITY}}


def _build(root: Path, params: dict, sources: list[dict], pdfs: dict[str, bytes], step) -> dict:
    charset = dictionary()
    det: dict[str, list[str]] = {"train": [], "eval": []}
    rec: dict[str, list[tuple[str, str]]] = {"train": [], "eval": []}
    counts = {f"det_{kind}_{split}": 0 for kind in ("boxes", "ignored") for split in det}
    dropped: dict[str, int] = {}
    heights: list[int] = []
    for task in ("det", "rec"):
        (root / task / "images").mkdir(parents=True)
    for source in SOURCES:
        pdf = open_pdf(pdfs[source.package])
        try:
            for split, page, dpi in source.pages():
                if not 1 <= page <= len(pdf):
                    raise ToolkitError(f"{source.package}: page {page} is not in {source.pdf} ({len(pdf)} pages)",
                                       hint="fix the pinned page list")
                result = render_page(pdf, page - 1, dpi, charset)
                rel = f"images/{source.package}_p{page:04d}.jpg"
                _save(result.image, root / "det" / rel, PAGE_QUALITY)
                boxes = _det_boxes(result)
                det[split].append(f"{rel}\t{json.dumps(boxes, ensure_ascii=False)}")
                kept = sum(b["transcription"] != IGNORE for b in boxes)
                counts[f"det_boxes_{split}"] += kept
                counts[f"det_ignored_{split}"] += len(boxes) - kept
                for k, ln in enumerate(result.lines):
                    if ln.reason is not None:
                        dropped[ln.reason] = dropped.get(ln.reason, 0) + 1
                        continue
                    rel = f"images/{source.package}_p{page:04d}_{k:03d}.jpg"
                    _save(_crop(result.image, ln), root / "rec" / rel, CROP_QUALITY)
                    rec[split].append((rel, ln.text))
                    heights.append(ln.box[3] - ln.box[1])
                step()
        finally:
            pdf.close()
    # Eval measures reading, not recall: a line that also occurs in train (a running head,
    # a repeated option) is no recognition eval sample.
    seen = {text for _, text in rec["train"]}
    for rel, text in rec["eval"]:
        if text in seen:
            (root / "rec" / rel).unlink()
    counts["rec_eval_dropped_as_in_train"] = sum(text in seen for _, text in rec["eval"])
    rec["eval"] = [(rel, text) for rel, text in rec["eval"] if text not in seen]
    for split in ("train", "eval"):
        _write_lines(root / "det" / f"{split}.txt", det[split])
        _write_lines(root / "rec" / f"{split}.txt", [f"{rel}\t{text}" for rel, text in rec[split]])
    texts = [text for split in rec for _, text in rec[split]]
    summary = {
        "kind": "real",
        "name": NAME,
        "params": params,
        "sources": sources,
        "counts": {"det_train": len(det["train"]), "det_eval": len(det["eval"]),
                   "rec_train": len(rec["train"]), "rec_eval": len(rec["eval"]), **counts},
        "dropped_lines": dict(sorted(dropped.items())),
        "line_height_px": _spread(heights),  # transcribed line boxes; a rec crop adds 2-6 px each side
        "text_length": _spread([len(t) for t in texts]),
        "sha256": label_hashes(root),
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _det_boxes(result: PageResult) -> list[dict]:
    """The page's det label: every line in reading order ("###" where not transcribed), then stray ink."""
    h, w = result.image.shape[:2]
    boxes = [{"transcription": IGNORE if ln.reason else ln.text, "points": q}
             for ln in result.lines for q in _quad(ln.box, w, h)]
    return boxes + [{"transcription": IGNORE, "points": q} for b in result.ignore for q in _quad(b, w, h)]


def _crop(image: np.ndarray, line: _Line) -> np.ndarray:
    """The line cut from the page by its box plus a detector-like margin, upright."""
    m = _margin(line)
    x0, y0, x1, y1 = line.box
    return image[max(y0 - m, 0):y1 + m, max(x0 - m, 0):x1 + m]


def _spread(values: list[int]) -> dict:
    return {"min": min(values), "median": int(np.median(values)), "max": max(values)} if values else {}


def _quad(box: tuple[int, int, int, int], w: int, h: int) -> list[list[list[int]]]:
    """The box as a clockwise quadrilateral inside the image ([] if almost nothing of it is inside)."""
    x0, x1 = (int(np.clip(v, 0, w - 1)) for v in (box[0], box[2]))
    y0, y1 = (int(np.clip(v, 0, h - 1)) for v in (box[1], box[3]))
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]] if x1 - x0 >= 2 and y1 - y0 >= 2 else []


def _save(rgb: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(rgb).save(path, quality=quality)


def _write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
