"""The run directory: one layout on disk shared by every stage, and its manifest.

RUN/
  manifest.json            every stage: key (hash of job + inputs), outputs with sha256, timings
  data/                    synthetic data when no --data is given
  float/{det,rec}/         float inference models (the baseline)
  quant/{det,rec}/         QAT checkpoints and log, model/ = exported quantized inference model
  nb/<target>/             {det,rec}.{float,int8}.nb and convert.json
  nb/x86/                  float .nb for the x86 runtime check
  eval/                    metrics.json, disagreements
  bundle/<target>/         exactly what goes to the device, with its manifest.json
  report.json

A stage is skipped when the manifest holds the same key and its outputs are unchanged,
so stages can run one at a time or all together, and re-running costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_key(**parts: Any) -> str:
    """Stable hash of a stage's job and input fingerprints."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared and served
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to `final`; on success it replaces `final` in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(paths: list[Path]) -> dict[str, str]:
    """sha256 of files, or of every file under a directory (sorted), keyed by path."""
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


class RunDir:
    """Paths of the one layout, and the manifest that makes stages resumable and skippable."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"

    # layout ---------------------------------------------------------------
    def data(self) -> Path:
        return self.root / "data"

    def float_model(self, task: str) -> Path:
        return self.root / "float" / task

    def quant_dir(self, task: str) -> Path:
        return self.root / "quant" / task

    def quant_model(self, task: str) -> Path:
        return self.quant_dir(task) / "model"

    def nb_dir(self, target: str) -> Path:
        return self.root / "nb" / target

    def nb(self, target: str, task: str, precision: str) -> Path:
        return self.nb_dir(target) / f"{task}.{precision}.nb"

    def eval_dir(self) -> Path:
        return self.root / "eval"

    def bundle_dir(self, target: str) -> Path:
        return self.root / "bundle" / target

    def report_path(self) -> Path:
        return self.root / "report.json"

    # manifest -------------------------------------------------------------
    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError:
            return {"stages": {}}

    def stage_result(self, name: str, key: str) -> dict | None:
        """The recorded result of `name` if it ran with `key` and its outputs are untouched."""
        rec = self.manifest()["stages"].get(name)
        if not rec or rec.get("key") != key:
            return None
        for rel, digest in rec.get("outputs", {}).items():
            p = self.root / rel
            if not p.exists() or fingerprint([p])[str(p)] != digest:
                return None
        return rec.get("result")

    def record_stage(self, name: str, key: str, outputs: list[Path], result: dict, seconds: float, extra: dict | None = None) -> None:
        m = self.manifest()
        fp = fingerprint(outputs)
        m["stages"][name] = {
            "key": key,
            "outputs": {str(Path(p).resolve().relative_to(self.root)): d for p, d in fp.items()},
            "result": result,
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        atomic_write_json(self.manifest_path, m)

    def run_stage(self, name: str, key: str, fn: Callable[[], tuple[dict, list[Path]]], log: Callable[[str], None] | None = None) -> dict:
        """Run `fn` unless the manifest says this exact work is done; record what it wrote."""
        cached = self.stage_result(name, key)
        if cached is not None:
            if log:
                log(f"{name}: up to date, skipped")
            return {**cached, "skipped": True}
        t0 = time.monotonic()
        result, outputs = fn()
        self.record_stage(name, key, outputs, result, time.monotonic() - t0)
        return {**result, "skipped": False}
