"""The pipeline's commands: one per stage, and `toolkit run` for all of them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from toolkit.cli.app import (DATA, JSON, RUN_DIR, RUNNER, SOURCES, TARGETS, TASKS, UI, app, datasets, emit, metrics_table, remember,
                             runner, sources, targets)
from toolkit.cli.options import model_options
from toolkit.jobs import QuantOptions

MAX_DROP = typer.Option(1.0, "--max-drop", help=QuantOptions.model_fields["max_drop"].description)
ALL_TARGETS = typer.Option(False, "--all-targets", help="Every target in targets/.")
SKIP_BAD = typer.Option(False, "--skip-bad-labels", help=QuantOptions.model_fields["skip_bad_labels"].description)


@contextlib.contextmanager
def opened(run_dir: Path, create: bool = False) -> Iterator:
    """The run directory, held by this command (see RunDir.lock)."""
    from toolkit.rundir import RunDir

    run = RunDir(run_dir, create=create)
    with run.lock(" ".join(["toolkit", *sys.argv[1:]])):
        yield run


@app.command()
@model_options(QuantOptions, "options")
def quantize(options: QuantOptions, run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[List[Path]] = DATA,
             det: Optional[str] = SOURCES["det"], rec: Optional[str] = SOURCES["rec"], det_o: List[str] = SOURCES["det_o"],
             rec_o: List[str] = SOURCES["rec_o"], runner_name: str = RUNNER, as_json: bool = JSON):
    """Quantization-aware training (or PTQ) of det and/or rec."""
    from toolkit.jobs import QuantJob
    from toolkit.stages.quantize.stage import plan
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts = parse_tasks(tasks)
    with opened(run_dir, create=True) as run:
        srcs, found = sources(run, ts, det, rec, det_o, rec_o), datasets(run, data)
        jobs = [plan(QuantJob(task=t, source=srcs[t], datasets=found, options=options)) for t in ts]
        remember(run, srcs, found)
        out = {j.task: runner(runner_name, ui).quantize(j, run, progress=ui.progress(f"{options.method.upper()} {j.task}"), log=ui.log)
               for j in jobs}
    emit(out, as_json, "\n".join(f"{t}: {r['method']} {'(up to date)' if r.get('skipped') else 'done'}" for t, r in out.items()))


@app.command()
def export(run_dir: Path = RUN_DIR, tasks: str = TASKS, runner_name: str = RUNNER, as_json: bool = JSON):
    """Export the float baseline and the quantized inference models."""
    from toolkit.jobs import ExportJob
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts = parse_tasks(tasks)
    with opened(run_dir) as run:
        srcs = sources(run, ts)
        remember(run, srcs)
        out = {t: runner(runner_name, ui).export(ExportJob(task=t, source=srcs[t]), run, ui.log) for t in ts}
    emit(out, as_json, "\n".join(f"{t}: {r['float_dir']}  {r['quant_dir']}" for t, r in out.items()))


@app.command()
def convert(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = TARGETS, all_targets: bool = ALL_TARGETS,
            runner_name: str = RUNNER, as_json: bool = JSON):
    """Convert to Paddle Lite .nb for each target (and the x86 equivalence check)."""
    from toolkit.jobs import ConvertJob
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts, chosen = parse_tasks(tasks), targets(target, all_targets)
    with opened(run_dir) as run:
        job = ConvertJob(targets=chosen, sources=sources(run, ts), tasks=ts)
        remember(run, job.sources)
        res = runner(runner_name, ui).convert(job, run, ui.log)
    lines = [f"{name:<16} {t}: float {r[t]['float']['bytes'] / 1e6:.2f} MB, int8 {r[t]['int8']['bytes'] / 1e6:.2f} MB "
             f"({r[t]['int8_size_ratio']:.0%}), {r[t]['int8']['int8_ops']} int8 ops" for name, r in res["targets"].items() for t in ts]
    emit(res, as_json, "\n".join(lines))


@app.command()
def analyze(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[List[Path]] = DATA,
            det: Optional[str] = SOURCES["det"], rec: Optional[str] = SOURCES["rec"], det_o: List[str] = SOURCES["det_o"],
            rec_o: List[str] = SOURCES["rec_o"],
            probe: Optional[int] = typer.Option(None, "--probe", min=1, help="Samples per layer measurement (default: the config's Quant.probe_samples)."),
            skip_bad_labels: bool = SKIP_BAD, as_json: bool = JSON):
    """Per-layer quantization sensitivity: quantize one layer at a time, rank by harm per extra byte,
    and show how the task metric recovers as the top-ranked layers stay float."""
    from toolkit.jobs import AnalyzeJob
    from toolkit.stages.analyze import analyze as run_analyze
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts = parse_tasks(tasks)
    with opened(run_dir, create=True) as run:
        srcs, found = sources(run, ts, det, rec, det_o, rec_o), datasets(run, data)
        remember(run, srcs, found)
        out = {t: run_analyze(AnalyzeJob(task=t, source=srcs[t], datasets=found, probe=probe, skip_bad_labels=skip_bad_labels), run,
                              progress=ui.progress(f"sensitivity {t}"), log=ui.log) for t in ts}
    emit(out, as_json, "\n".join(_sensitivity_table(t, r) for t, r in out.items()))


def _sensitivity_table(task: str, r: dict) -> str:
    lines = [f"{task}: {r['layers']} quantizable layers, {r['search_samples']} held-out samples; float {r['float_metric']:.4f}, "
             f"every layer quantized {r['full_quant_metric']:.4f} (drop {r['full_quant_drop_points']:.2f} points); {r['seconds']['total']:.0f} s",
             "  rank  harm/kB  output error  layer"]
    lines += [f"  {x['rank']:>4}  {x['harm_per_kb']:>7.4f}  {x['error']:>12.5f}  {x['layer']}" for x in r["top"]]
    lines += ["  float layers -> drop: " + ", ".join(f"top {c['float_layers']}: {c['drop_points']:.2f}" for c in r["top_k_curve"])]
    return "\n".join(lines)


@app.command()
def evaluate(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[List[Path]] = DATA, max_drop: float = MAX_DROP,
             limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N samples of each eval set."),
             skip_bad_labels: bool = SKIP_BAD, runner_name: str = RUNNER, as_json: bool = JSON):
    """Float vs quantized on every eval set with Paddle Inference; fails when the judged drop exceeds --max-drop."""
    from toolkit.cli.options import build
    from toolkit.jobs import EvalJob
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts = parse_tasks(tasks)
    with opened(run_dir) as run:
        job = build(EvalJob, {"sources": sources(run, ts), "datasets": datasets(run, data), "tasks": ts, "max_drop": max_drop,
                              "skip_bad_labels": skip_bad_labels, "limit": limit})
        remember(run, job.sources, job.datasets)
        res = runner(runner_name, ui).evaluate(job, run, ui.log, progress=ui.progress)
    emit(res, as_json, metrics_table(res))


@app.command()
def bundle(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = TARGETS, all_targets: bool = ALL_TARGETS,
           as_json: bool = JSON):
    """Assemble the device bundle per target (every .nb checked against its conversion record)."""
    from toolkit.jobs import BundleJob
    from toolkit.stages.bundle import bundle as run_bundle
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts, chosen = parse_tasks(tasks), targets(target, all_targets)
    with opened(run_dir) as run:
        found = [Path(p) for p in run.state().get("datasets", [])]
        job = BundleJob(targets=chosen, sources=sources(run, ts), datasets=found, tasks=ts)
        remember(run, job.sources)
        res = run_bundle(job, run, ui.log)
    emit(res, as_json, "\n".join(f"{n}: {r['path']} ({r['files']} files)" for n, r in res.items()))


@app.command("run")
@model_options(QuantOptions, "quant")
def run_cmd(quant: QuantOptions, target: Optional[List[str]] = TARGETS, all_targets: bool = ALL_TARGETS, run_dir: Path = RUN_DIR,
            tasks: str = TASKS,
            data: Optional[List[Path]] = typer.Option(None, "--data", help="Dataset folders (repeat); default: synthetic data and real "
                                                                            "document pages made in RUN/data."),
            det: Optional[str] = SOURCES["det"], rec: Optional[str] = SOURCES["rec"], det_o: List[str] = SOURCES["det_o"],
            rec_o: List[str] = SOURCES["rec_o"],
            deploy_to: Optional[str] = typer.Option(None, "--deploy", help="Also deploy the first target's bundle, e.g. dir:PATH."),
            runner_name: str = RUNNER, as_json: bool = JSON):
    """Every stage for one or more targets: data, quantize, export, convert, evaluate, bundle (and deploy)."""
    from toolkit.jobs import RunJob
    from toolkit.pipeline import run_all
    from toolkit.stages.deploy import check_spec
    from toolkit.stages.quantize.stage import plan
    from toolkit.tasks import parse_tasks

    ui = UI(as_json)
    ts = parse_tasks(tasks)
    spec = check_spec(deploy_to) if deploy_to else None
    chosen = targets(target, all_targets)
    with opened(run_dir, create=True) as run:
        job = RunJob(targets=chosen, tasks=ts, sources=sources(run, ts, det, rec, det_o, rec_o),
                     datasets=datasets(run, data) if data else [], quant=quant, runner=runner_name)
        for task in ts:
            plan(job.quant_job(task, job.datasets))
        remember(run, job.sources, job.datasets or None)
        report = run_all(job, run, ui, deploy_to=spec)
    lines = [metrics_table(report["metrics"])]
    for name, t in report["targets"].items():
        lines += [f"{name:<16} {task}: int8 {t[task]['int8_nb_bytes'] / 1e6:.2f} MB = {t[task]['size_ratio']:.1%} of float, "
                  f"{t[task]['int8_ops']} int8 ops" for task in ts if task in t]
        if "bundle" in t:
            lines.append(f"{name:<16} bundle: {t['bundle']['path']}")
    lines.append(f"report: {run.report_path()} and {run.html_path()}  ({report['timings']['total']:.0f}s)")
    emit(report, as_json, "\n".join(lines))


@app.command()
def report(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = TARGETS,
           all_targets: bool = typer.Option(True, "--all-targets/--no-all-targets", help="Every target that has .nb files."),
           as_json: bool = JSON):
    """Rebuild report.json and report.html from what the stages recorded."""
    from toolkit.report.summary import write_report
    from toolkit.tasks import parse_tasks

    with opened(run_dir) as run:
        rep = write_report(run, targets(target, all_targets and not target), parse_tasks(tasks), {}, sys.argv, None)
    emit(rep, as_json, f"wrote {run.report_path()} and {run.html_path()}")
