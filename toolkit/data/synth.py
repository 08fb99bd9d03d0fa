"""Seeded synthetic OCR data in PaddleOCR's label formats.

Lets every step (training, QAT, export, on-device checks) run and be benchmarked without a
real dataset. The text is English as found on documents, signs and receipts, rendered legibly
with mild, realistic variation, so a good float PP-OCRv4 model should score near-perfect and any
drop after quantisation or conversion shows up clearly.
"""

from __future__ import annotations

import json
import random
import zlib
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from toolkit.digest import sha256_file
from toolkit.errors import ToolkitError
from toolkit.data.stored import label_hashes, reuse_or_claim
from toolkit.rundir import atomic_dir

SYNTH_VERSION = 3  # bump when the output changes, so cached datasets are rebuilt

WORDS = """
the and for you with this that from your are all new not our can will more one two three
free open closed sale total subtotal tax cash card change due paid balance amount price
item items qty each unit order invoice receipt date time number account customer service
thank thanks visit again welcome please exit entrance push pull stop parking only no yes
street road avenue north south east west main center city park station bus train platform
gate floor room office hours monday tuesday wednesday thursday friday saturday sunday
daily week month year today tomorrow morning evening night coffee tea milk sugar bread
water juice soup salad pizza burger chicken rice fish beef cheese fresh hot cold small
medium large extra special menu breakfast lunch dinner table kitchen store market shop
bank hotel hospital school library museum police fire emergency danger warning caution
notice keep clear door window left right up down first last next back front side top
bottom page section chapter report summary name address phone email website contact
information details reference code status pending approved shipped delivered returned
credit debit discount offer limited quality best value save buy get off per day hour
minute delivery shipping handling payment method signature manager staff member guest
room key check out in at to of on by or as is it we be do if so go see use make take
give help need want work call come find know like look read write send show start end
home house garden car taxi airport flight ticket seat gate baggage arrival departure
local national public private general health safety support office desk level area zone
lot block building tower plaza market square bridge river lake hill valley green blue
red black white yellow orange brown gray silver gold light dark clean quiet slow fast
smoking allowed prohibited staff toilets restroom men women children family pets dogs
welcome goodbye hello sorry thank please note important urgent confirm cancel update
product products model serial version size color weight height width length volume
lemon apple banana orange tomato potato onion garlic pepper salt butter eggs flour oil
pasta noodles sandwich cookies cake chocolate candy snack drinks beer wine soda ice
""".split()
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
CODE_PREFIXES = "INV PO SKU REF ORD ID NO TKT LOT".split()
DARK_INKS = [(20, 20, 20), (40, 40, 40), (60, 60, 60), (30, 45, 115), (125, 25, 25), (25, 85, 40)]
LIGHT_INKS = [(250, 250, 250), (235, 235, 235), (240, 220, 80), (205, 230, 245)]
# The only fonts the synthesiser draws with: those in matplotlib's wheel (mpl-data/fonts/ttf),
# byte-identical in every matplotlib from 3.8.4 to 3.11.2, each checked by sha256 before use.
# Never the system's fonts: the same seed must give the same images on every machine. Left
# out: the maths and symbol fonts (cmmi10, cmsy10, cmex10, STIXNonUni*, STIXSiz*), the Display
# subsets (no digits or punctuation), LastResortHE (one placeholder glyph per Unicode block)
# and cmti10 (Computer Modern italic draws '£' for '$'; also only in matplotlib >= 3.11).
FONTS = {
    "DejaVuSans-Bold.ttf": "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167",
    "DejaVuSans-BoldOblique.ttf": "6edf0283160186af451cbee71e7b845f2e4cabf264bb992ce668c83c25465e6f",
    "DejaVuSans-Oblique.ttf": "ccdf74b350f11fd3dd5774de50e5e6346a1a5da1f5b7d5fb83590665e97a5213",
    "DejaVuSans.ttf": "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22",
    "DejaVuSansMono-Bold.ttf": "baada9a5172fe20886251aff0433fc38461912d5daf07287e7bee56620a8da96",
    "DejaVuSansMono-BoldOblique.ttf": "a69081c15c76c827e0a27a5a7f5c74b6135c843499955495ffa8c20d3a98288b",
    "DejaVuSansMono-Oblique.ttf": "28052813f7a709fc89f52d192dc995ef4f0fdc5c3d7b73a49d6849b1916d0cd0",
    "DejaVuSansMono.ttf": "602ec86b8948cfcd956482fe64f94c36c867770149ef2f791d4613f443bcecb3",
    "DejaVuSerif-Bold.ttf": "c3753f2ed6bc673f15846dc45addbeb3b9c872f32fb18fd53a21f1bef1ed7676",
    "DejaVuSerif-BoldItalic.ttf": "d93efec7a9d2e826768d1a2ee95b95870e15e29599a84f3484af1de1cec2e181",
    "DejaVuSerif-Italic.ttf": "3e7994fbc54fa10ce3352a42d548fadd7d9cadb69cb1109bc9d960f6dac57f04",
    "DejaVuSerif.ttf": "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa",
    "STIXGeneral.ttf": "167378031e2dddc6216d67819c9260e9a06ffc4c478e4e23cb98a6fd44b183c2",
    "STIXGeneralBol.ttf": "e8533dc7083fa346bda1933d60ea4a83b67d0945bceaf1b3541f82b4a0e2c6a0",
    "STIXGeneralBolIta.ttf": "98788fd4ba48dfbb2bd026c0e20a247a8b06c7372879628b7a6bb0d5bb09736c",
    "STIXGeneralItalic.ttf": "6cfcb333d22b7c3c623bdfd40174f14c85c3d6731ca6166c1edc80140eae8527",
    "cmb10.ttf": "074497b50c43ea57597181591f9893d38fc12a87e95104f5657fc2481f61a23a",
    "cmr10.ttf": "4dd9761b058c009db9b2145f55ee6617d093c273dd3d6c5b3e43ff6110fa9bf6",
    "cmss10.ttf": "7df91a83d05b2e471ec638cb0b435a360a3c792b09fc42a7da67e91f2e79115a",
    "cmtt10.ttf": "6211f09ae93599991afda970c24669dad1a77e253d915624fbf212f702f071d7",
}
MATPLOTLIB_PIN = "matplotlib==3.9.4"  # what to install if the fonts are missing or differ


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder, found without importing matplotlib."""
    spec = find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError("synthetic data is drawn with the fonts shipped in matplotlib, which is not installed",
                           hint=f"pip install {MATPLOTLIB_PIN}")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"


def find_fonts() -> list[Path]:
    """The synthesiser's fonts, sorted by file name, each verified against FONTS."""
    folder = font_dir()
    fonts = []
    for name, want in sorted(FONTS.items()):
        path = folder / name
        got = sha256_file(path) if path.is_file() else None
        if got != want:
            from importlib.metadata import PackageNotFoundError, version

            try:
                installed = f"matplotlib {version('matplotlib')}"
            except PackageNotFoundError:
                installed = "matplotlib"
            state = "is missing" if got is None else f"differs (sha256 {got}, expected {want})"
            raise ToolkitError(f"font {path} of {installed} {state}; the synthetic "
                               "data would not be the same as on other machines",
                               hint=f"pip install {MATPLOTLIB_PIN} (any matplotlib 3.8.4 to 3.11.2 ships these fonts)")
        fonts.append(path)
    return fonts


def renderer() -> str:
    """The libraries whose versions decide the pixels besides the fonts (glyph rasteriser, JPEG encoder)."""
    from PIL import __version__ as pillow, features

    return f"Pillow {pillow} (FreeType {features.version('freetype2')}, libjpeg {features.version('jpg')})"


@lru_cache(maxsize=1024)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# ---------------------------------------------------------------- text

def _token(rs: random.Random) -> str:
    kind = rs.choices(["word", "number", "price", "date", "time", "code", "percent", "phone", "qty"],
                      weights=[70, 5, 7, 4, 2, 5, 2, 2, 2])[0]
    if kind == "word":
        word = rs.choice(WORDS)
        return word + rs.choice(",.:!") if rs.random() < 0.08 else word
    if kind == "number":
        n = rs.choice([rs.randint(0, 99), rs.randint(100, 9999), rs.randint(1000, 99999)])
        return f"{n:,}" if rs.random() < 0.3 else str(n)
    if kind == "price":
        return f"{rs.choice(['$', '$', ''])}{rs.randint(0, 999)}.{rs.randint(0, 99):02d}"
    if kind == "date":
        y, m, d = rs.randint(2015, 2030), rs.randint(1, 12), rs.randint(1, 28)
        return rs.choice([f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}", f"{d} {MONTHS[m - 1]} {y}"])
    if kind == "time":
        return rs.choice([f"{rs.randint(0, 23):02d}:{rs.randint(0, 59):02d}",
                          f"{rs.randint(1, 12)}:{rs.randint(0, 59):02d} {rs.choice(['AM', 'PM'])}"])
    if kind == "code":
        p = rs.choice(CODE_PREFIXES)
        return rs.choice([f"{p}-{rs.randint(2015, 2030)}-{rs.randint(0, 9999):04d}",
                          f"{p}-{rs.randint(100, 99999)}", f"#{rs.randint(100, 999999)}"])
    if kind == "percent":
        return rs.choice([f"{rs.randint(1, 99)}%", f"{rs.randint(0, 30)}.{rs.randint(0, 9)}%"])
    if kind == "phone":
        return f"({rs.randint(200, 999)}) {rs.randint(200, 999)}-{rs.randint(0, 9999):04d}"
    return rs.choice([f"x{rs.randint(1, 12)}", f"{rs.randint(1, 20)}pcs", f"{rs.randint(1, 5)}kg"])


def _phrase(rs: random.Random, max_words: int, max_chars: int) -> str:
    """1..max_words tokens, at most max_chars; one letter-case style for the words (not codes)."""
    style = rs.choices(["lower", "title", "upper", "sentence"], weights=[3, 3, 2, 2])[0]
    words: list[str] = []
    for _ in range(rs.randint(1, max_words)):
        token = _token(rs)
        if words and not _is_word(token) and not _is_word(words[-1]):
            token = rs.choice(WORDS)  # "$5.20 9" reads as "$5.209": keep numbers apart
        if _is_word(token):
            if style == "upper":
                token = token.upper()
            elif style == "title" or (style == "sentence" and not words):
                token = token.capitalize()
        if len(" ".join(words + [token])) > max_chars:
            break
        words.append(token)
    return " ".join(words) if words else rs.choice(WORDS)


def _is_word(token: str) -> bool:
    return token.rstrip(",.:!").isalpha()


def _rec_texts(seed: int, n_train: int, n_eval: int) -> dict[str, list[str]]:
    """Unique texts per split; eval texts never occur in train, so eval measures reading, not recall."""
    rs = random.Random(f"{seed}/rec-text")
    seen: set[str] = set()  # membership only: set order depends on the hash seed
    out: dict[str, list[str]] = {"train": [], "eval": []}
    for split, n in (("train", n_train), ("eval", n_eval)):
        for _ in range(100 * n + 1000):
            if len(out[split]) == n:
                break
            text = _phrase(rs, 5, 25)
            if text not in seen:
                seen.add(text)
                out[split].append(text)
        else:
            raise ToolkitError(f"cannot make {n_train + n_eval} distinct recognition texts",
                               hint="ask for fewer recognition samples")
    return out


# ---------------------------------------------------------------- pixels

def _background(rng: np.random.Generator, h: int, w: int, dark: bool) -> np.ndarray:
    """Flat colour, gradient or paper-like texture, kept in a luminance band far from the ink."""
    base = rng.uniform(15, 60) if dark else rng.uniform(185, 250)
    color = base + rng.uniform(-15, 15, 3)
    img = np.broadcast_to(color, (h, w, 3)).astype(np.float32)
    kind = rng.integers(3)
    if kind == 1:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        img = img + t[..., None] * rng.uniform(-35, 35, 3).astype(np.float32)
    elif kind == 2:  # paper: blotchy low-frequency shading plus fine grain
        blotch = rng.standard_normal((h // 24 + 2, w // 24 + 2), np.float32)
        blotch = cv2.resize(blotch, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(4, 10)
        img = img + (blotch + 3 * rng.standard_normal((h, w), np.float32))[..., None]
    return np.clip(img, 0, 80) if dark else np.clip(img, 160, 255)


def _clutter(rng: np.random.Generator, bg: np.ndarray, dark: bool) -> np.ndarray:
    """A few faint rules, frames and blobs, as on forms and signs; too faint to read as text."""
    h, w = bg.shape[:2]
    im = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    mean = bg.mean((0, 1))
    for _ in range(rng.integers(0, 5)):
        shift = rng.uniform(20, 45) * (1 if dark else -1)
        color = tuple(int(c) for c in np.clip(mean + shift, 0, 255))
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        kind = rng.integers(3)
        if kind == 0:
            draw.line([(0, y0), (w, y0)] if rng.random() < 0.6 else [(x0, y0), (x1, y1)],
                      fill=color, width=int(rng.integers(1, 4)))
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], outline=color, width=int(rng.integers(1, 3)))
        else:
            draw.ellipse([x0, y0, x1, y1], fill=color)
    return np.asarray(im, dtype=np.float32)


def _ink(rng: np.random.Generator, dark_bg: bool) -> tuple[int, int, int]:
    inks = LIGHT_INKS if dark_bg else DARK_INKS
    base = np.array(inks[rng.integers(len(inks))]) + rng.integers(-12, 13, 3)
    return tuple(int(c) for c in np.clip(base, 0, 255))


def _homography(rng: np.random.Generator, w: int, h: int, max_deg: float, jitter: float) -> np.ndarray:
    """Rotation about the centre plus a little corner jitter (perspective)."""
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    ctr = np.array([w / 2, h / 2], np.float32)
    dst = (src - ctr) @ rot.T + ctr + rng.uniform(-jitter, jitter, (4, 2)) * [w, h]
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _warp_points(pts, m: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float32)[None], m)[0]


def _compose(bg: np.ndarray, fg: Image.Image, alpha: Image.Image, m: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Warp the text layer, lay it on the background, then camera-like blur and noise."""
    h, w = bg.shape[:2]
    warp = lambda im: cv2.warpPerspective(np.asarray(im), m, (w, h), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = warp(alpha).astype(np.float32)[..., None] / 255.0
    img = bg * (1 - a) + warp(fg).astype(np.float32) * a
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    img = img + np.float32(rng.uniform(1, 4)) * rng.standard_normal(img.shape, np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _line_box(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int, int]:
    """Text box relative to the baseline origin: ink left/right, at least cap height to baseline."""
    left, top, right, bottom = font.getbbox(text, anchor="ls")
    cap = font.getbbox("H", anchor="ls")[1]
    return left, min(top, cap), right, max(bottom, 0)


DET_SIZES = [(640, 480), (480, 640), (800, 600), (600, 800), (720, 540)]


def _det_image(rng: np.random.Generator, rs: random.Random, fonts: list[str]) -> tuple[np.ndarray, list]:
    """One page/sign photo with 3-8 non-overlapping text lines and their warped quadrilaterals."""
    # Camera/scanner frame sizes: a handful of shapes, as real photo sets have (and oneDNN
    # builds its kernels once per input shape, so 100 different sizes would cost minutes).
    w, h = DET_SIZES[int(rng.integers(len(DET_SIZES)))]
    dark = rng.random() < 0.25
    bg = _clutter(rng, _background(rng, h, w, dark), dark)
    m = _homography(rng, w, h, max_deg=5, jitter=0.03)
    page_fonts = [fonts[i] for i in rng.choice(len(fonts), min(3, len(fonts)), replace=False)]
    fg, alpha = Image.new("RGB", (w, h)), Image.new("L", (w, h))
    draw_fg, draw_a = ImageDraw.Draw(fg), ImageDraw.Draw(alpha)
    taken: list[tuple[float, float, float, float]] = []
    boxes = []
    want = int(rng.integers(3, 9))
    for _ in range(60 * want):
        if len(boxes) == want:
            break
        size = int(rng.integers(18, 50))
        font = _font(page_fonts[rng.integers(len(page_fonts))], size)
        text = _phrase(rs, 6, 32)
        left, top, right, bottom = _line_box(font, text)
        pad = max(2, round(size * 0.1))
        bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
        if bw >= w - 4 or bh >= h - 4:
            continue
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        gap = size * 0.5  # keep lines apart so they are not detected as one block
        if any(x < r + gap and o_x - gap < x + bw and y < b + gap and o_y - gap < y + bh
               for o_x, o_y, r, b in taken):
            continue
        quad = _warp_points([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], m)
        if quad.min() < 2 or (quad[:, 0] > w - 3).any() or (quad[:, 1] > h - 3).any():
            continue  # would leave the image after the warp
        taken.append((x, y, x + bw, y + bh))
        draw_fg.rectangle([x, y, x + bw, y + bh], fill=_ink(rng, dark))
        draw_a.text((x + pad - left, y + pad - top), text, font=font, fill=255, anchor="ls")
        quad = np.clip(np.rint(quad), 0, [w - 1, h - 1]).astype(int)
        boxes.append({"transcription": text, "points": quad.tolist()})
    return _compose(bg, fg, alpha, m, rng), boxes


def _rec_image(rng: np.random.Generator, text: str, fonts: list[str]) -> np.ndarray:
    """One text-line crop as a detector would cut it: line height from font metrics, 2-6 px pad."""
    size = int(rng.integers(24, 47))
    font = _font(fonts[rng.integers(len(fonts))], size)
    ascent, descent = font.getmetrics()
    left, _, right, _ = _line_box(font, text)
    margin = size  # room for the rotation
    cw, ch = right - left + 2 * margin, ascent + descent + 2 * margin
    origin = (margin - left, margin + ascent)
    alpha = Image.new("L", (cw, ch))
    ImageDraw.Draw(alpha).text(origin, text, font=font, fill=255, anchor="ls")
    m = _homography(rng, cw, ch, max_deg=2, jitter=0)
    box = _warp_points([[margin, margin], [cw - margin, margin], [cw - margin, ch - margin],
                        [margin, ch - margin]], m)
    pl, pt, pr, pb = (int(p) for p in rng.integers(2, 7, 4))
    x0, y0 = (int(v) for v in np.floor(box.min(0)) - [pl, pt])
    x1, y1 = (int(v) for v in np.ceil(box.max(0)) + [pr, pb])
    m = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ m  # warp straight into the crop
    dark = rng.random() < 0.25
    fg = Image.new("RGB", (cw, ch), _ink(rng, dark))
    return _compose(_background(rng, y1 - y0, x1 - x0, dark), fg, alpha, m, rng)


# ---------------------------------------------------------------- dataset

def synth_dataset(out_dir: Path, det_train: int, det_eval: int, rec_train: int, rec_eval: int,
                  seed: int = 0, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write (or reuse) a synthetic det+rec dataset under out_dir and return its summary.

    Built in a temporary sibling directory and moved into place, so an interrupted run never
    leaves a half-written dataset that a later run would mistake for a finished one.
    """
    out_dir = Path(out_dir)
    counts = {"det_train": det_train, "det_eval": det_eval, "rec_train": rec_train, "rec_eval": rec_eval}
    for name, value in {**counts, "seed": seed}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ToolkitError(f"synthetic data: {name} must be a whole number >= 0, got {value!r}")
    params = {"version": SYNTH_VERSION, "seed": seed, **counts, "renderer": renderer()}
    fonts = find_fonts()
    records = [{"file": p.name, "sha256": FONTS[p.name]} for p in fonts]  # dataset.json: no machine paths
    total = sum(counts.values())
    existing = reuse_or_claim(out_dir, "synthetic", "a synthetic dataset",
                              lambda s: s.get("params") == params and s.get("fonts") == records, total, progress)
    if existing:
        return existing
    with atomic_dir(out_dir) as tmp:  # an interrupted build never leaves a half-written dataset
        summary = _build(tmp, params, [str(p) for p in fonts], records, progress)
    return summary


def _rngs(seed: int, stream: str, index: int) -> tuple[np.random.Generator, random.Random]:
    """Independent generators per sample, so one split's size never changes another's content."""
    return (np.random.default_rng([seed, zlib.crc32(stream.encode()), index]),
            random.Random(f"{seed}/{stream}/{index}"))


def _build(root: Path, params: dict, fonts: list[str], records: list[dict], progress) -> dict:
    total = sum(params[k] for k in ("det_train", "det_eval", "rec_train", "rec_eval"))
    done = 0
    boxes_per_split = {}

    def save(img: np.ndarray, path: Path, rng: np.random.Generator) -> None:
        nonlocal done
        Image.fromarray(img).save(path, quality=int(rng.integers(90, 96)))
        done += 1
        if progress:
            progress(done, total)

    def write_labels(path: Path, lines: list[str]) -> None:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)

    for task in ("det", "rec"):
        (root / task / "images").mkdir(parents=True)
    texts = _rec_texts(params["seed"], params["rec_train"], params["rec_eval"])
    for split in ("train", "eval"):
        lines = []
        for i in range(params[f"det_{split}"]):
            rng, rs = _rngs(params["seed"], f"det-{split}", i)
            img, boxes = _det_image(rng, rs, fonts)
            rel = f"images/{split}_{i:05d}.jpg"
            save(img, root / "det" / rel, rng)
            lines.append(f"{rel}\t{json.dumps(boxes, ensure_ascii=False)}")
        boxes_per_split[split] = sum(line.count('"points"') for line in lines)
        write_labels(root / "det" / f"{split}.txt", lines)
        lines = []
        for i, text in enumerate(texts[split]):
            rng, _ = _rngs(params["seed"], f"rec-{split}", i)
            rel = f"images/{split}_{i:06d}.jpg"
            save(_rec_image(rng, text, fonts), root / "rec" / rel, rng)
            lines.append(f"{rel}\t{text}")
        write_labels(root / "rec" / f"{split}.txt", lines)
    summary = {
        "params": params,
        "fonts": records,
        "counts": {**{k: params[k] for k in ("det_train", "det_eval", "rec_train", "rec_eval")},
                   "det_boxes_train": boxes_per_split["train"], "det_boxes_eval": boxes_per_split["eval"]},
        "sha256": label_hashes(root),
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
