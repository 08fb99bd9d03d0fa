"""Datasets: folders of PaddleOCR label files, one or several per run.

A dataset folder has `det/{train,eval}.txt` (images relative to `det/`) and/or
`rec/{train,eval}.txt` (relative to `rec/`), and may have a `dataset.json` that names it and
says whether it is real or synthetic (what `toolkit data synth` and `toolkit data real` write).
A run trains on the train splits of all its datasets and evaluates each eval split on its own;
the verdict (`--max-drop`) is judged on the first real dataset, else on the first one.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from toolkit.data.images import decodes
from toolkit.data.stored import dataset_kind
from toolkit.digest import fingerprint as fingerprint_paths
from toolkit.errors import ToolkitError
from toolkit.tasks import get_task

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Dataset:
    path: Path
    name: str
    kind: str          # real | synthetic | unknown

    def label_file(self, task: str, split: str) -> Path:
        return self.path / task / f"{split}.txt"

    def has(self, task: str, split: str) -> bool:
        return self.label_file(task, split).is_file()


def open_dataset(path: Path) -> Dataset:
    """A dataset folder; a clear error when it is not one."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ToolkitError(f"--data {path}: no such directory",
                           hint="give a folder with det/{train,eval}.txt and/or rec/{train,eval}.txt "
                                "(`toolkit data synth` or `toolkit data real` make one)")
    if not any((path / t / f"{s}.txt").is_file() for t in ("det", "rec") for s in SPLITS):
        raise ToolkitError(f"--data {path}: no label files (det/train.txt, det/eval.txt, rec/train.txt, rec/eval.txt)",
                           hint="point --data at a dataset folder; `toolkit data check --data DIR` explains what it finds")
    meta: dict = {}
    if (path / "dataset.json").is_file():
        try:
            meta = json.loads((path / "dataset.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            meta = {}
    return Dataset(path.resolve(), str(meta.get("name") or path.name), str(dataset_kind(meta)))


def open_datasets(paths: Sequence[Path]) -> list[Dataset]:
    out = [open_dataset(p) for p in paths]
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        out = [Dataset(d.path, f"{d.name}-{i}", d.kind) for i, d in enumerate(out)]  # two folders with one name
    return out


def judged(datasets: Sequence[Dataset], task: str) -> Dataset | None:
    """The dataset whose eval split decides the verdict: the first real one, else the first."""
    having = [d for d in datasets if d.has(task, "eval")]
    return next((d for d in having if d.kind == "real"), having[0] if having else None)


def fingerprint(task: str, datasets: Sequence[Dataset]) -> dict:
    """Hash of the label files and image folders a task reads."""
    paths: list[Path] = []
    for d in datasets:
        paths += [d.label_file(task, s) for s in SPLITS] + [d.path / task / "images"]
    return fingerprint_paths(paths)


def load_split(task: str, dataset: Dataset, split: str, cfg: dict, skip_bad: bool) -> list:
    """Validated samples of one split, every image decoded once: bad lines and images stop the run
    with all of them listed (file:line), or are skipped and counted with --skip-bad-labels."""
    f = dataset.label_file(task, split)
    samples, report = get_task(task).read_labels(f, cfg, "skip" if skip_bad else "stop")
    lines = _line_numbers(f)
    bad = [(s, why) for s in samples if (why := decodes(s.image))]
    problems = list(report.skipped) + [f"{f}:{lines.get(str(s.image), '?')}: {s.image}: {why}" for s, why in bad]
    if bad and not skip_bad:
        raise ToolkitError(f"{len(bad)} image(s) of {f} cannot be read:\n  " + "\n  ".join(problems[:5])
                           + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""),
                           hint="fix or remove those lines, or pass --skip-bad-labels to skip them")
    if bad:
        samples = [s for s in samples if not any(s is b for b, _ in bad)]
    if problems:
        print(f"{f}: skipped {len(problems)} of {report.total} lines (first: {problems[0]})", file=sys.stderr)
    if not samples:
        raise ToolkitError(f"{f}: no usable samples ({report.total} lines, {len(problems)} skipped)",
                           hint="first problems: " + "; ".join(problems[:3]))
    return samples


def train_and_search(task: str, datasets: Sequence[Dataset], cfg: dict, search_samples: int, skip_bad: bool) -> tuple[list, list]:
    """The train splits minus a held-out search set (the last samples of each split, in proportion
    to its size, at most a quarter of it): QAT never trains on them, the float-fallback search
    measures accuracy on them, and the eval splits stay untouched for the verdict."""
    splits = [load_split(task, d, "train", cfg, skip_bad) for d in datasets if d.has(task, "train")]
    if not splits:
        raise ToolkitError(f"no {task} training data in {', '.join(str(d.path) for d in datasets)}",
                           hint=f"a dataset needs {task}/train.txt (`toolkit data check --data DIR`)")
    total = sum(len(s) for s in splits)
    train, search = [], []
    for s in splits:
        n = min(-(-search_samples * len(s) // total), len(s) // 4) if search_samples else 0
        train += s[: len(s) - n]
        search += s[len(s) - n:]
    return train, search


def eval_sets(task: str, datasets: Sequence[Dataset], cfg: dict, skip_bad: bool, limit: int | None = None) -> list[tuple[Dataset, list]]:
    out = [(d, load_split(task, d, "eval", cfg, skip_bad)[: limit or None]) for d in datasets if d.has(task, "eval")]
    if not out:
        raise ToolkitError(f"no {task} eval split in {', '.join(str(d.path) for d in datasets)}",
                           hint=f"a dataset needs {task}/eval.txt to measure the quantized model")
    return out


def check(dataset_path: Path, cfg_for: dict[str, dict]) -> dict:
    """Every problem of a dataset, not only the first: label lines (file:line) and images that do
    not decode. {"task/split": {"lines", "usable", "problems": [...]}}."""
    d = open_dataset(dataset_path)
    rows: dict = {}
    for task, cfg in cfg_for.items():
        for split in SPLITS:
            if not d.has(task, split):
                continue
            f = d.label_file(task, split)
            try:
                samples, report = get_task(task).read_labels(f, cfg, "skip")
                problems = list(report.skipped)
            except ToolkitError as exc:  # nothing usable at all
                samples, problems = [], [exc.message]
                report = None
            lines = _line_numbers(f)
            bad_images = 0
            for s in samples:
                why = decodes(s.image)
                if why:
                    bad_images += 1
                    problems.append(f"{f}:{lines.get(str(s.image), '?')}: {s.image}: {why}")
            rows[f"{task}/{split}"] = {"lines": report.total if report else 0, "usable": len(samples) - bad_images, "problems": problems}
    return rows


def _line_numbers(label_file: Path) -> dict[str, int]:
    """Image path -> line number of its label, for naming an undecodable image by file:line."""
    out: dict[str, int] = {}
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return out
    for n, line in enumerate(text.split("\n"), 1):
        rel = line.partition("\t")[0].strip()
        if rel:
            out.setdefault(str(label_file.parent / rel), n)
    return out
