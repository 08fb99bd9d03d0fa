"""Content hashes: of files, of folders, of JSON-able values. One definition each, so a stage
key, a bundle manifest and an image tag all mean the same thing by "the same content"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_json(value: Any) -> str:
    """Stable hash of a JSON-able value (keys sorted; paths and other objects as str)."""
    return sha256_bytes(json.dumps(value, sort_keys=True, default=str).encode())


def fingerprint(paths: list[Path]) -> dict[str, str]:
    """sha256 of files, or of every file under a directory (sorted names and contents), keyed by path."""
    out: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(str(f.relative_to(p)).encode())
                h.update(sha256_file(f).encode())
            out[str(p)] = h.hexdigest()
        elif p.is_file():
            out[str(p)] = sha256_file(p)
        else:
            out[str(p)] = "missing"
    return out
