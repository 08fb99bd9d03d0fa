"""report.json: the run's results in stable, machine-readable names (and report.html, the same for people).

  metrics.<det|rec>.<float|quant>.{hmean,precision,recall | acc,acc_ignore_space,norm_edit_dis,cer}   fractions 0..1,
      on the judged eval set (metrics.<task>.judged); metrics.<task>.sets.<dataset>.{float,quant,drop_points} for every set
  metrics.<task>.drop_points, metrics.<task>.x86_nb_check
  targets.<target>.<task>.{float_nb_bytes, int8_nb_bytes, int8_ops, int8_op_types, size_ratio, lite_version}
  quantization.<task>   method, steps, loss first/last, layers kept float
  timings, versions, command, status, error
  deploy.<target>.<device>   status, release, sent/unchanged files, smoke and benchmark (timings_ms) from RUN/deploy/
"""

from __future__ import annotations

import shlex

from toolkit.engine import versions
from toolkit.errors import ToolkitError
from toolkit.rundir import RunDir, atomic_write_json, read_json
from toolkit.targets import Target


def _json(path) -> dict | None:
    return read_json(path) if path.exists() else None


def build_report(run: RunDir, targets: list[Target], tasks: list[str]) -> dict:
    from toolkit.stages.evaluate import summarize_metrics

    stages = run.manifest()["stages"]
    metrics_full = _json(run.metrics_path()) or {}
    metrics = summarize_metrics({t: metrics_full[t] for t in tasks if t in metrics_full})
    out_targets: dict = {}
    for target in targets:
        conv = _json(run.convert_report(target.name))
        if not conv:
            continue
        entry = {}
        for task in tasks:
            if task not in conv:
                continue
            f, q = conv[task]["float"], conv[task]["int8"]
            entry[task] = {"float_nb_bytes": f["bytes"], "int8_nb_bytes": q["bytes"], "int8_ops": q["int8_ops"],
                           "int8_op_types": q["int8_op_types"], "size_ratio": conv[task]["int8_size_ratio"],
                           "lite_version": q["lite_version"], "opt_seconds": {"float": f["opt_seconds"], "int8": q["opt_seconds"]}}
        bundle = stages.get(f"bundle:{target.name}", {}).get("result")
        if bundle:
            entry["bundle"] = bundle
        out_targets[target.name] = entry
    quant = {}
    for task in tasks:
        res = stages.get(f"quantize:{task}", {}).get("result")
        if res:
            quant[task] = {k: res.get(k) for k in ("method", "steps", "loss_first", "loss_last", "float_layers", "calibration_batches") if k in res}
            quant[task]["skip_patterns"] = (res.get("settings") or {}).get("skip_layers")
            search = res.get("search")
            if search:
                quant[task]["search"] = {k: search.get(k) for k in ("met", "budget_points", "float_metric", "final_drop_points",
                                                                    "float_extra_bytes", "seconds_before_training", "seconds_after_training")}
    out = {"run_dir": str(run.root), "metrics": metrics, "targets": out_targets, "quantization": quant,
           "stage_seconds": {name: rec.get("seconds") for name, rec in stages.items()}, "versions": versions()}
    if deploy := deploy_results(run):
        out["deploy"] = deploy
        for part, figures in device_metrics(deploy).items():
            out["metrics"].setdefault(part, {})["device"] = figures
    return out


# --- deploy results (toolkit deploy writes RUN/deploy/<target>/<device>.json) ---

def deploy_results(run: RunDir) -> dict:
    """deploy.<target>.<device>: the last deploy to each device, with its smoke and benchmark figures."""
    out: dict = {}
    for path in run.deploy_records():
        try:
            r = read_json(path, "deploy record")
        except ToolkitError:
            continue
        if not isinstance(r, dict):
            continue
        entry = {k: r.get(k) for k in ("status", "release", "previous_release", "sent", "unchanged", "bytes", "seconds", "error") if k in r}
        entry["abi"] = (r.get("facts") or {}).get("abi")
        if r.get("verify"):
            entry["verify"] = _without_samples(r["verify"])
        for kind in ("smoke", "benchmark"):
            if kind in r:
                res = r[kind].get("result") or {}
                entry[kind] = {"ok": r[kind]["ok"], "returncode": r[kind]["returncode"], "seconds": r[kind]["seconds"],
                               **{k: res[k] for k in ("timings_ms", "threads", "power_mode", "warmup", "repeats", "lines", "standin") if k in res}}
        out.setdefault(path.parent.name, {})[r.get("device", path.stem)] = entry
    return out


def _without_samples(v: dict) -> dict:
    """A verify result without its per-sample lists (they stay in RUN/deploy/.../verify.json)."""
    return {k: ({kk: vv for kk, vv in x.items() if kk not in ("per_image", "differ")} if isinstance(x, dict) else x) for k, x in v.items()}


def device_metrics(deploy: dict) -> dict:
    """metrics.<task>.device: the last verified device's figures per task (whole pages stay under
    deploy.<target>.<device>.verify.pipeline)."""
    from toolkit.jobs import TASKS

    out: dict = {}
    for devices in deploy.values():
        for dev, entry in devices.items():
            v = entry.get("verify")
            if not v:
                continue
            for task in TASKS:
                if v.get("standin"):
                    out[task] = {"device": dev, "standin": True}
                elif isinstance(v.get(task), dict):
                    out[task] = {"device": dev, **v[task]}
    return out


def merge_deploy_results(run: RunDir) -> dict:
    """Put the deploy section into report.json (created with just that section if the run has none yet)."""
    report = _json(run.report_path()) or {"run_dir": str(run.root)}
    report["deploy"] = deploy_results(run)
    for part, figures in device_metrics(report["deploy"]).items():
        report.setdefault("metrics", {}).setdefault(part, {})["device"] = figures
    atomic_write_json(run.report_path(), report)
    from toolkit.report.page import write_html

    write_html(run, report)
    return report


def write_report(run: RunDir, targets: list[Target], tasks: list[str], timings: dict, command: list[str],
                 error: ToolkitError | None) -> dict:
    report = build_report(run, targets, tasks)
    report.update({"status": "failed" if error else "ok", "error": None if error is None else {"message": error.message, "hint": error.hint},
                   "timings": timings, "command": " ".join(shlex.quote(a) for a in command)})
    atomic_write_json(run.report_path(), report)
    from toolkit.report.page import write_html

    write_html(run, report)
    return report
