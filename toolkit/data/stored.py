"""A dataset builder's output directory: what it built before is reused, anything else is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from toolkit.digest import sha256_file
from toolkit.errors import ToolkitError

LABEL_FILES = ("det/train.txt", "det/eval.txt", "rec/train.txt", "rec/eval.txt")


def label_hashes(root: Path) -> dict[str, str]:
    """sha256 of every label file, recorded in dataset.json so a damaged set is noticed."""
    return {f: sha256_file(root / f) for f in LABEL_FILES}


def dataset_kind(summary: dict) -> str:
    """What dataset.json says the set is: its `kind`, else "synthetic" for the synthesiser's sets
    (known by their fonts; they predate the field), else "unknown"."""
    return summary.get("kind") or ("synthetic" if "fonts" in summary else "unknown")


def stored_summary(out_dir: Path, kind: str) -> dict | None:
    """The stored dataset.json if out_dir holds an intact dataset of this kind ({} if ours but
    damaged, None if not ours)."""
    path = out_dir / "dataset.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(summary, dict) or dataset_kind(summary) != kind:
        return None  # another builder's set (or a user's folder): never overwrite it
    try:
        intact = label_hashes(out_dir) == summary["sha256"]
    except (OSError, KeyError, TypeError):
        return {}
    return summary if intact else {}


def reuse_or_claim(out_dir: Path, kind: str, what: str, same_inputs: Callable[[dict], bool],
                   total: int, progress: Callable[[int, int], None] | None) -> dict | None:
    """The dataset already in out_dir when it was built from the same inputs; None when it is to be
    (re)built there. A non-empty directory that is not one of this builder's sets is refused."""
    existing = stored_summary(out_dir, kind)
    if existing and same_inputs(existing):
        if progress:
            progress(total, total)
        return existing
    if out_dir.exists() and existing is None and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ToolkitError(f"{out_dir} exists and is not {what} made by this toolkit",
                           hint="choose another output directory or remove this one")
    return None
