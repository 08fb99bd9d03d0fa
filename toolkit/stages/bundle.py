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

import shlex
import shutil
from pathlib import Path
from typing import Callable

from toolkit.data.datasets import judged, open_datasets
from toolkit.digest import fingerprint, hash_json, sha256_file
from toolkit.engine import versions as engine_versions
from toolkit.errors import ToolkitError
from toolkit.jobs import BundleJob
from toolkit.rundir import RunDir, atomic_dir, atomic_write_json, read_json
from toolkit.runners.envs import toolkit_home
from toolkit.targets import Target
from toolkit.tasks import get_task


def runtime_dir(target: Target) -> Path:
    """Where a built runtime for the target is kept (the runtime image's output)."""
    return toolkit_home() / "runtime" / target.name


def runtime_config(target: Target, job: BundleJob) -> dict:
    """What the on-device runner needs to pre- and post-process as the host pipeline does."""
    cfg: dict = {"lite_version": target.lite.version, "threads": target.defaults.threads, "power_mode": target.defaults.power_mode}
    for name in job.tasks:
        cfg[name] = get_task(name).runtime_config(job.sources[name].load_config())
    return cfg


def _test_image(job: BundleJob) -> Path | None:
    """The first det eval image of the judged dataset: what the on-device smoke run reads."""
    ds = judged(open_datasets(job.datasets), "det") if job.datasets else None
    if ds is None:
        return None
    lines = ds.label_file("det", "eval").read_text(encoding="utf-8").splitlines()
    p = ds.path / "det" / lines[0].split("\t", 1)[0] if lines else None
    return p if p is not None and p.exists() else None


def checked_nb(run: RunDir, target: str, task: str) -> Path:
    """The int8 .nb as convert recorded it (size and sha256): a damaged or replaced file is refused."""
    nb = run.nb(target, task, "int8")
    if not nb.exists():
        raise ToolkitError(f"{nb} is missing", hint=f"run `toolkit convert --target {target} --run-dir {run.root}` first")
    rec = (read_json(run.convert_report(target), "convert.json") if run.convert_report(target).exists() else {}).get(task, {}).get("int8", {})
    if not rec.get("sha256"):
        raise ToolkitError(f"{nb}: no conversion record", hint=f"re-run `toolkit convert --target {target} --run-dir {run.root}`")
    size = nb.stat().st_size
    if size != rec["bytes"] or sha256_file(nb) != rec["sha256"]:
        raise ToolkitError(f"{nb} is not the file convert wrote ({size} bytes, expected {rec['bytes']}; sha256 differs)",
                           hint=f"the file was damaged or replaced: re-run `toolkit convert --target {target} --run-dir {run.root}`")
    return nb


def build_bundle(job: BundleJob, run: RunDir, target: Target) -> dict:
    """Assemble bundle/<target>/ in a temp dir and rename it into place."""
    if not run.metrics_path().exists():
        raise ToolkitError("no evaluation results in this run directory", hint=f"run `toolkit evaluate --run-dir {run.root}` first: a bundle carries its metrics")
    from toolkit.stages.evaluate import still_valid, summarize_metrics

    read_json(run.metrics_path(), "eval/metrics.json")  # a damaged file is named here, not taken for an empty one
    measured = still_valid(run, exclude=[])  # the entries measured on the models as they are now
    missing = [t for t in job.tasks if t not in measured]
    if missing:
        raise ToolkitError(f"eval/metrics.json has no figures for {', '.join(missing)} measured on the current models",
                           hint=f"run `toolkit evaluate --run-dir {run.root} --tasks {','.join(missing)}` first: a bundle carries its metrics")
    metrics = summarize_metrics({t: measured[t] for t in job.tasks})
    versions = engine_versions()
    models = {task: checked_nb(run, target.name, task) for task in job.tasks}
    with atomic_dir(run.bundle_dir(target.name)) as tmp:
        (tmp / "models").mkdir()
        for task, nb in models.items():
            shutil.copy2(nb, tmp / "models" / f"{task}.nb")
        for task in job.tasks:
            for rel, src in get_task(task).bundle_files(job.sources[task].load_config()).items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, tmp / rel)
        atomic_write_json(tmp / "config.json", runtime_config(target, job))
        img = _test_image(job)
        if img is not None:
            (tmp / "test").mkdir()
            shutil.copy2(img, tmp / "test" / "image.jpg")
        rt = runtime_dir(target)
        runtime = {"included": False, "reason": f"no runtime built for {target.name} in {rt} (the runtime image builds it; see README)"}
        if (rt / "bin").is_dir():
            shutil.copytree(rt, tmp / "runtime")
            info = rt / "BUILD-INFO.json"
            runtime = {"included": True, **(read_json(info, "runtime BUILD-INFO.json") if info.exists() else {})}
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
        inputs = fingerprint([run.nb(target.name, t, "int8") for t in job.tasks] + [run.metrics_path(), runtime_dir(target)])
        key = hash_json({"target": target.model_dump(), "inputs": inputs, "sources": {t: job.sources[t].fingerprint() for t in job.tasks},
                         "image": str(_test_image(job))})
        out[target.name] = run.run_stage(f"bundle:{target.name}", key, lambda t=target: (build_bundle(job, run, t), [run.bundle_dir(t.name)]), log)
    return out
