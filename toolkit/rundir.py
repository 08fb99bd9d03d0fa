"""The run directory: one layout on disk shared by every stage, its manifest and run.json.

RUN/
  run.json                 what this run uses: model sources, datasets (written by the CLI)
  manifest.json            every stage: key (hash of job + inputs), outputs with sha256, timings
  data/synth/, data/real/  the main job's datasets when no --data is given
  float/{det,rec}/         float inference models (the baseline)
  quant/{det,rec}/         QAT checkpoints, train_log.jsonl, qat.json; model/ = quantized inference model
  nb/<target>/             {det,rec}.{float,int8}.nb and convert.json; nb/x86/ the float x86 check
  eval/metrics.json        float vs quantized metrics per dataset, per-sample outputs, disagreements
  analyze/<task>/          sensitivity.json (toolkit analyze)
  bundle/<target>/         exactly what goes to the device, with its manifest.json
  deploy/<target>/         one record per device (+ the runner's outputs)
  jobs/                    job.json / result.json (and .log) of stages run in containers or child processes
  report.json, report.html

Every path is built here and nowhere else. A stage is skipped when the manifest holds the same
key and its outputs are unchanged. One command at a time holds the run directory (a lock file),
so two commands cannot interleave their manifest updates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from toolkit.digest import fingerprint
from toolkit.errors import ToolkitError


def _os_error(exc: OSError, what: Path) -> ToolkitError:
    """A filesystem failure as something a user can act on."""
    if exc.errno == errno.ENOSPC:
        return ToolkitError(f"{what}: no space left on the device holding it", hint="free disk space, then re-run the same command")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ToolkitError(f"{what}: not writable ({exc.strerror})", hint="choose a writable --run-dir, or fix the permissions")
    return ToolkitError(f"{what}: {exc.strerror or exc}", hint="check the path and the disk")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old or the new content, never a part."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise _os_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared and served
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _os_error(exc, path) from None
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file this toolkit wrote; a damaged one is a clear error, not a traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path}: damaged {what or 'JSON file'} ({exc})",
                           hint="delete it and re-run the command that writes it") from None


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to `final`; on success it replaces `final` in one rename."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    except OSError as exc:
        raise _os_error(exc, final) from None
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise _os_error(exc, final) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class RunDir:
    """Paths of the one layout, run.json, the manifest that makes stages skippable, the lock."""

    def __init__(self, root: Path | str, create: bool = True):
        """`create=False`: the run directory must exist (a stage that reads earlier results)."""
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ToolkitError(f"--run-dir {root} is a file, not a directory", hint="pass a directory for the run")
        if not self.root.exists():
            if not create:
                raise ToolkitError(f"--run-dir {root}: no such run directory",
                                   hint="check the path (a typo?); `toolkit run` or `toolkit quantize` creates a run directory")
            try:
                self.root.mkdir(parents=True)
            except OSError as exc:
                raise _os_error(exc, self.root) from None
        self.manifest_path = self.root / "manifest.json"

    # layout ---------------------------------------------------------------
    def data_root(self) -> Path:
        return self.root / "data"

    def dataset(self, name: str) -> Path:
        """A dataset the main job makes (synth, real) when no --data is given."""
        return self.data_root() / name

    def float_model(self, task: str) -> Path:
        return self.root / "float" / task

    def quant_dir(self, task: str) -> Path:
        return self.root / "quant" / task

    def quant_model(self, task: str) -> Path:
        return self.quant_dir(task) / "model"

    def checkpoints(self, task: str) -> Path:
        return self.quant_dir(task) / "ckpt"

    def train_log(self, task: str) -> Path:
        return self.quant_dir(task) / "train_log.jsonl"

    def qat_state(self, task: str) -> Path:
        return self.quant_dir(task) / "qat_final.pdparams"

    def quant_info(self, task: str, method: str) -> Path:
        """qat.json or ptq.json: what quantization did and with which settings."""
        return self.quant_dir(task) / f"{method}.json"

    def ptq_model(self, task: str) -> Path:
        return self.quant_dir(task) / "ptq"

    def ptq_float_input(self, task: str) -> Path:
        return self.quant_dir(task) / "ptq_float"

    def search_cache(self, task: str) -> Path:
        return self.quant_dir(task) / "search.json"

    def dist_logs(self, task: str) -> Path:
        return self.quant_dir(task) / "dist_logs"

    def nb_dir(self, target: str) -> Path:
        return self.root / "nb" / target

    def nb(self, target: str, task: str, precision: str) -> Path:
        return self.nb_dir(target) / f"{task}.{precision}.nb"

    def convert_report(self, target: str) -> Path:
        return self.nb_dir(target) / "convert.json"

    def x86_dir(self) -> Path:
        return self.nb_dir("x86")

    def eval_dir(self) -> Path:
        return self.root / "eval"

    def metrics_path(self) -> Path:
        return self.eval_dir() / "metrics.json"

    def sensitivity(self, task: str) -> Path:
        return self.root / "analyze" / task / "sensitivity.json"

    def bundle_dir(self, target: str) -> Path:
        return self.root / "bundle" / target

    def deploy_dir(self, target: str) -> Path:
        return self.root / "deploy" / target

    def deploy_record(self, target: str, device_slug: str) -> Path:
        return self.deploy_dir(target) / f"{device_slug}.json"

    def deploy_outputs(self, target: str, device_slug: str) -> Path:
        return self.deploy_dir(target) / device_slug

    def deploy_records(self) -> list[Path]:
        return sorted((self.root / "deploy").glob("*/*.json"))

    def job_files(self, name: str) -> tuple[Path, Path]:
        """job.json and result.json of a stage run in another process (container, rank)."""
        d = self.root / "jobs"
        return d / f"{name}.job.json", d / f"{name}.result.json"

    def job_log(self, name: str) -> Path:
        """What a stage run in a child process printed (progress, warnings)."""
        return self.root / "jobs" / f"{name}.log"

    def report_path(self) -> Path:
        return self.root / "report.json"

    def html_path(self) -> Path:
        return self.root / "report.html"

    # run.json --------------------------------------------------------------
    def state(self) -> dict:
        """run.json: the model sources and datasets this run uses (flags given once stick)."""
        p = self.root / "run.json"
        if not p.exists():
            return {}
        state = read_json(p, "run.json")
        return state if isinstance(state, dict) else {}

    def update_state(self, **values: Any) -> dict:
        state = {**self.state(), **values}
        atomic_write_json(self.root / "run.json", state)
        return state

    # the lock --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the run directory for one command; a second command gets a clear error at once."""
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(exc, self.root) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another toolkit command"
                raise ToolkitError(f"{self.root} is in use by {holder}",
                                   hint="wait for that command to finish (one command at a time per run directory), or use another --run-dir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {command}"[:400].encode(), 0)
            yield
        finally:
            os.close(fd)

    # manifest -------------------------------------------------------------
    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        m = read_json(self.manifest_path, "manifest")
        if not isinstance(m, dict) or not isinstance(m.get("stages"), dict):
            raise ToolkitError(f"{self.manifest_path}: damaged manifest", hint="delete it: every stage then runs again")
        return m

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

    def record_stage(self, name: str, key: str, outputs: list[Path], result: dict, seconds: float) -> None:
        """Read-modify-write of manifest.json under a short lock of its own (ranks and threads too)."""
        fp = fingerprint(outputs)
        with open(self.root / ".manifest.lock", "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            m = self.manifest()
            m["stages"][name] = {
                "key": key,
                "outputs": {str(Path(p).resolve().relative_to(self.root)): d for p, d in fp.items()},
                "result": result,
                "seconds": round(seconds, 2),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            atomic_write_json(self.manifest_path, m)

    def run_stage(self, name: str, key: str, fn: Callable[[], tuple[dict, list[Path]]], log: Callable[[str], None] | None = None) -> dict:
        """Run `fn` unless the manifest says this exact work is done; record what it wrote.

        Outputs are written atomically and a record is only trusted while its outputs' hashes
        match, so a failed or interrupted stage leaves the directory as it was and is never
        mistaken for a finished one."""
        cached = self.stage_result(name, key)
        if cached is not None:
            if log:
                log(f"{name}: up to date, skipped")
            return {**cached, "skipped": True}
        t0 = time.monotonic()
        result, outputs = fn()
        self.record_stage(name, key, outputs, result, time.monotonic() - t0)
        return {**result, "skipped": False}
