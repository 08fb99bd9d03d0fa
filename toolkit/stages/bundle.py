"""Stage 5: the device bundle per target, exactly what goes to the device.

bundle/<target>/
  models/det.nb, models/rec.nb   int8 Paddle Lite models
  dict/<dictionary>.txt          the recogniser's characters
  config.json                    runtime settings: det thresholds and resize, rec input shape, threads, power mode
  test/image.jpg                 an eval image for the on-device smoke run
  runtime/                       the target's Paddle Lite runtime + runner, when built (see `toolkit doctor`)
  manifest.json                  versions, sha256 of every file, metrics, the command line
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.engine import versions as engine_versions
from toolkit.runners.envs import toolkit_home
from toolkit.errors import ToolkitError
from toolkit.models.sources import TASKS, ModelSource, load_config
from toolkit.rundir import RunDir, atomic_dir, atomic_write_json, fingerprint, sha256_file, stage_key
from toolkit.targets import Target


@dataclass
class BundleJob:
    targets: list[Target]
    sources: dict[str, ModelSource]
    data_dir: Path | None = None
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    command: list[str] = field(default_factory=lambda: list(sys.argv))


def runtime_dir(target: Target) -> Path:
    """Where a built runtime for the target is kept (the runtime image's output)."""
    return toolkit_home() / "runtime" / target.name


def runtime_config(target: Target, sources: dict[str, ModelSource], tasks: list[str]) -> dict:
    """What the on-device runner needs to pre- and post-process like PaddleOCR does."""
    cfg: dict = {"lite_version": target.lite.version, "threads": target.defaults.threads, "power_mode": target.defaults.power_mode}
    if "det" in tasks:
        c = load_config(sources["det"].config, sources["det"].overrides)
        pp = {k: v for k, v in (c.get("PostProcess") or {}).items() if k != "name"}
        ev = c.get("Eval") or {}
        cfg["det"] = {"model": "models/det.nb", "limit_side_len": ev.get("limit_side_len", 960), "limit_type": ev.get("limit_type", "max"),
                      "mean": ev.get("mean"), "std": ev.get("std"), "color_order": "BGR", **pp}
    if "rec" in tasks:
        c = load_config(sources["rec"].config, sources["rec"].overrides)
        cfg["rec"] = {"model": "models/rec.nb", "image_shape": (c.get("Eval") or {}).get("image_shape", [3, 48, 320]),
                      "dict": "dict/" + Path(c["Global"]["character_dict_path"]).name, "use_space_char": c["Global"].get("use_space_char", True),
                      "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "color_order": "BGR"}
    return cfg


def _test_image(data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    labels = Path(data_dir) / "det" / "eval.txt"
    if not labels.exists():
        return None
    first = labels.read_text(encoding="utf-8").splitlines()[0].split("\t", 1)[0]
    p = labels.parent / first
    return p if p.exists() else None


def build_bundle(job: BundleJob, run: RunDir, target: Target) -> dict:
    """Assemble bundle/<target>/ in a temp dir and rename it into place."""
    metrics_path = run.eval_dir() / "metrics.json"
    if not metrics_path.exists():
        raise ToolkitError("no evaluation results in this run directory", hint=f"run `toolkit evaluate --run-dir {run.root}` first: a bundle carries its metrics")
    from toolkit.stages.evaluate import summarize_metrics

    metrics = summarize_metrics(json.loads(metrics_path.read_text()))
    versions = engine_versions()
    with atomic_dir(run.bundle_dir(target.name)) as tmp:
        (tmp / "models").mkdir()
        for task in job.tasks:
            nb = run.nb(target.name, task, "int8")
            if not nb.exists():
                raise ToolkitError(f"{nb} is missing", hint=f"run `toolkit convert --target {target.name} --run-dir {run.root}` first")
            shutil.copy2(nb, tmp / "models" / f"{task}.nb")
        cfg = runtime_config(target, job.sources, job.tasks)
        if "rec" in job.tasks:
            (tmp / "dict").mkdir()
            src_dict = load_config(job.sources["rec"].config, job.sources["rec"].overrides)["Global"]["character_dict_path"]
            shutil.copy2(src_dict, tmp / cfg["rec"]["dict"])
        atomic_write_json(tmp / "config.json", cfg)
        img = _test_image(job.data_dir)
        if img is not None:
            (tmp / "test").mkdir()
            shutil.copy2(img, tmp / "test" / "image.jpg")
        rt = runtime_dir(target)
        runtime = {"included": False, "reason": f"no runtime built for {target.name} in {rt} (the runtime image builds it; see README)",
                   "archive_url": target.runtime.archive_url}
        if (rt / "bin").is_dir():
            shutil.copytree(rt, tmp / "runtime")
            runtime = {"included": True, "archive_url": target.runtime.archive_url}
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "target": target.name, "abi": target.abi, "accepted_abis": target.accepted_abis,
            "lite_version": target.lite.version, "versions": {**versions, "paddlelite": target.lite.python_wheel.split("==")[-1]},
            "models": {t: {"file": f"models/{t}.nb", "source": job.sources[t].spec} for t in job.tasks},
            "metrics": metrics, "runtime": runtime, "files": files,
            "command": " ".join(shlex.quote(a) for a in job.command),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return {"target": target.name, "path": str(run.bundle_dir(target.name)), "files": len(files) + 1,
            "bytes": sum(p.stat().st_size for p in run.bundle_dir(target.name).rglob("*") if p.is_file()), "runtime_included": runtime["included"]}


def bundle(job: BundleJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: one bundle per target, skipped when its inputs are unchanged."""
    out = {}
    for target in job.targets:
        inputs = fingerprint([run.nb(target.name, t, "int8") for t in job.tasks] + [run.eval_dir() / "metrics.json", runtime_dir(target)])
        key = stage_key(target=target.model_dump(), inputs=inputs, sources={t: job.sources[t].fingerprint() for t in job.tasks},
                        image=str(_test_image(job.data_dir)))
        out[target.name] = run.run_stage(f"bundle:{target.name}", key, lambda t=target: (build_bundle(job, run, t), [run.bundle_dir(t.name)]), log)
    return out
