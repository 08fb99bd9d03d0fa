"""The `toolkit` command: a thin Typer layer that builds jobs from flags and calls the stages.

Every user-fixable problem is a ToolkitError, printed as one message plus a hint with a
non-zero exit; nothing reaches the user as a traceback (TOOLKIT_DEBUG=1 shows one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolkit.errors import ToolkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize PP-OCR models, convert them with Paddle Lite, and deliver device bundles.")
targets_app = typer.Typer(no_args_is_help=True, help="Deployment targets (targets/*.yaml).")
models_app = typer.Typer(no_args_is_help=True, help="Built-in models.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthesise and check.")
app.add_typer(targets_app, name="targets")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")

RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="Run directory shared by all stages.")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
TASKS = typer.Option("det,rec", "--tasks", help="Which models: det, rec or det,rec.")


class UI:
    """Human output on stderr (stdout stays clean for --json), progress bars for long work."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            typer.echo(msg, err=True)

    def progress(self, desc: str):
        """A tqdm bar on a terminal; in logs (CI), a line at every quarter of the work."""
        from tqdm import tqdm

        bar: dict = {}
        tty = sys.stderr.isatty()

        def update(done: int, total: int, loss: float | None = None) -> None:
            if self.quiet:
                return
            if not tty:
                if done == total or done % max(1, total // 4) == 0:
                    self.log(f"{desc}: {done}/{total}" + (f" loss {loss:.4f}" if loss is not None else ""))
                return
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, initial=done - 1, leave=True, mininterval=1.0)
            b = bar["bar"]
            b.update(done - b.n)
            if loss is not None:
                b.set_postfix(loss=f"{loss:.4f}")
            if done >= total:
                b.close()

        return update


# Results go to the real stdout; with --json, main() points sys.stdout at stderr for everything
# else, so libraries that print (ppocr logs to stdout on import) cannot corrupt the JSON.
RESULTS = sys.stdout


def emit(obj, as_json: bool, human: str | None = None) -> None:
    text = json.dumps(obj, indent=2, default=str) if as_json or human is None else human
    typer.echo(text, file=RESULTS)


def _tasks(spec: str) -> list[str]:
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("det", "rec")]
    if bad or not tasks:
        raise ToolkitError(f"--tasks {spec}: unknown task {', '.join(bad) or '(none)'}", hint="use det, rec or det,rec")
    return tasks


def _targets(names: list[str] | None, all_targets: bool = False):
    from toolkit.targets import get_target, list_targets

    if all_targets:
        return list_targets()
    return [get_target(n) for n in (names or ["android-arm64"])]


def _run_state(run_dir: Path) -> dict:
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _sources(run_dir: Path, tasks: list[str], det: str | None, rec: str | None, det_o: list[str], rec_o: list[str]):
    """Model sources from flags, else from what this run directory used before, else the zoo."""
    from toolkit.models import resolve_source
    from toolkit.rundir import atomic_write_json

    state = _run_state(run_dir)
    prev = state.get("sources", {})
    given = {"det": (det, det_o), "rec": (rec, rec_o)}
    out = {}
    for t in tasks:
        spec, o = given[t]
        if spec is None and not o and t in prev:
            spec, o = prev[t]["spec"], prev[t]["overrides"]
        out[t] = resolve_source(t, spec, tuple(o))
    state["sources"] = {**prev, **{t: {"spec": s.spec, "overrides": list(s.overrides)} for t, s in out.items()}}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(run_dir) / "run.json", state)
    return out


def _data_dir(run_dir: Path, data: Path | None) -> Path:
    from toolkit.rundir import atomic_write_json

    state = _run_state(run_dir)
    if data is None:
        data = Path(state["data_dir"]) if state.get("data_dir") else Path(run_dir) / "data"
    if not (Path(data) / "det").exists() and not (Path(data) / "rec").exists():
        raise ToolkitError(f"no dataset in {data}", hint="pass --data DIR (det/ and rec/ label files), or make one with `toolkit data synth`")
    state["data_dir"] = str(Path(data).resolve())
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(run_dir) / "run.json", state)
    return Path(data)


def _skip_layers(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        task, sep, pattern = item.partition(":")
        if not sep or task not in ("det", "rec") or not pattern:
            raise ToolkitError(f"--skip-layer {item}: expected TASK:PATTERN", hint="e.g. --skip-layer 'rec:*.se.*'")
        out.setdefault(task, []).append(pattern)
    return out


# ------------------------------------------------------------------ targets / models / data
@targets_app.command("list")
def targets_list(as_json: bool = JSON):
    """List the targets defined in targets/."""
    from toolkit.targets import list_targets

    rows = [{"name": t.name, "os": t.os, "arch": t.arch, "abi": t.abi, "lite": t.lite.version, "transport": t.transport.kind,
             "device_dir": t.transport.device_dir} for t in list_targets()]
    emit(rows, as_json, "\n".join(f"{r['name']:<16} {r['os']:<8} {r['arch']:<8} {r['abi']:<12} lite {r['lite']:<8} {r['transport']}:{r['device_dir']}" for r in rows))


@targets_app.command("show")
def targets_show(name: str, as_json: bool = JSON):
    """Show every field of one target."""
    from toolkit.targets import get_target

    t = get_target(name)
    emit(t.model_dump(), as_json)


@models_app.command("list")
def models_list(as_json: bool = JSON):
    """List the built-in models (real PP-OCRv4 mobile weights, no download)."""
    from toolkit.models import zoo_table

    rows = zoo_table()
    emit(rows, as_json, "\n".join(f"{r['name']:<26} {r['task']}  {r['bytes'] / 1e6:5.1f} MB  {r['description']}" for r in rows))


@data_app.command("synth")
def data_synth(out: Path = typer.Option(Path("data/synth"), "--out", help="Output folder."),
               det_train: int = 40, det_eval: int = 100, rec_train: int = 800, rec_eval: int = 500,
               seed: int = 0, as_json: bool = JSON):
    """Render a det set and a rec set of realistic text images with PaddleOCR labels."""
    from toolkit.synth import synth_dataset

    ui = UI(as_json)
    summary = synth_dataset(out, det_train, det_eval, rec_train, rec_eval, seed=seed, progress=ui.progress("synth"))
    emit(summary, as_json, f"wrote {out}: {summary['counts']}")


@data_app.command("check")
def data_check(data: Path = typer.Option(..., "--data"), skip_bad_labels: bool = False, as_json: bool = JSON):
    """Validate a dataset's label files (file:line for every problem)."""
    from toolkit.data import label_file
    from toolkit.labels import read_det_labels, read_rec_labels

    rows = {}
    for task, reader in (("det", read_det_labels), ("rec", read_rec_labels)):
        for split in ("train", "eval"):
            f = label_file(data, task, split)
            if f.exists():
                _, rep = reader(f, None, "skip" if skip_bad_labels else "stop")
                rows[f"{task}/{split}"] = {"lines": rep.total, "usable": rep.usable, "skipped": rep.skipped}
    emit(rows, as_json, "\n".join(f"{k}: {v['usable']}/{v['lines']} usable" for k, v in rows.items()))


@app.command()
def setup(target: Optional[List[str]] = typer.Option(None, "--target"), all_targets: bool = typer.Option(True, "--all-targets/--no-all-targets")):
    """Create the converter environment(s) (Paddle Lite's Python) the targets need."""
    from toolkit.envs import ensure_converter

    ui = UI()
    done = set()
    for t in _targets(target, all_targets and not target):
        if t.lite.version not in done:
            ui.log(f"converter for Paddle Lite {t.lite.version}: {ensure_converter(t, ui.log)}")
            done.add(t.lite.version)


# ------------------------------------------------------------------ stages
QUANT_OPTS = dict(
    method=typer.Option("qat", "--method", help="qat (quantization-aware training) or ptq (calibration only)."),
    steps=typer.Option(None, "--steps", help="QAT steps (default: the config's Quant.steps)."),
    batch_size=typer.Option(None, "--batch-size"),
    lr=typer.Option(None, "--lr", help="Learning rate (default: the config's)."),
    skip_layer=typer.Option([], "--skip-layer", help="TASK:PATTERN of layers kept float (fnmatch on layer names)."),
    pact=typer.Option(None, "--pact/--no-pact", help="PACT activation clipping during QAT."),
    resume=typer.Option(False, "--resume", help="Continue an interrupted QAT from its last checkpoint."),
    device=typer.Option("cpu", "--device", help="cpu or gpu."),
)
SRC_OPTS = dict(
    det=typer.Option(None, "--det", help="det model: zoo:NAME, an inference model dir, or a PaddleOCR config .yml."),
    rec=typer.Option(None, "--rec", help="rec model: zoo:NAME, an inference model dir, or a PaddleOCR config .yml."),
    det_o=typer.Option([], "--det-override", "-O", help="Section.key=value override of the det config (PaddleOCR's -o)."),
    rec_o=typer.Option([], "--rec-override", help="Section.key=value override of the rec config."),
)


@app.command()
def quantize(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[Path] = typer.Option(None, "--data"),
             det: Optional[str] = SRC_OPTS["det"], rec: Optional[str] = SRC_OPTS["rec"],
             det_o: List[str] = SRC_OPTS["det_o"], rec_o: List[str] = SRC_OPTS["rec_o"],
             method: str = QUANT_OPTS["method"], steps: Optional[int] = QUANT_OPTS["steps"], batch_size: Optional[int] = QUANT_OPTS["batch_size"],
             lr: Optional[float] = QUANT_OPTS["lr"], skip_layer: List[str] = QUANT_OPTS["skip_layer"], pact: Optional[bool] = QUANT_OPTS["pact"],
             resume: bool = QUANT_OPTS["resume"], device: str = QUANT_OPTS["device"], seed: int = 0,
             skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"), as_json: bool = JSON):
    """Quantization-aware training (or PTQ) of det and/or rec."""
    from toolkit.quantize import QuantJob, quantize as run_quantize
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    run = RunDir(run_dir)
    sources = _sources(run_dir, ts, det, rec, det_o, rec_o)
    data_dir = _data_dir(run_dir, data)
    skips = _skip_layers(skip_layer)
    out = {}
    for t in ts:
        job = QuantJob(task=t, source=sources[t], data_dir=data_dir, method=method, steps=steps, batch_size=batch_size,
                       learning_rate=lr, skip_layers=skips.get(t, []), pact=pact, resume=resume, seed=seed, device=device,
                       skip_bad_labels=skip_bad_labels)
        out[t] = run_quantize(job, run, progress=ui.progress(f"{method.upper()} {t}"), log=ui.log)
    emit(out, as_json, "\n".join(f"{t}: {r['method']} {'(up to date)' if r.get('skipped') else 'done'}" for t, r in out.items()))


@app.command()
def export(run_dir: Path = RUN_DIR, tasks: str = TASKS, as_json: bool = JSON):
    """Export the float baseline and the quantized inference models."""
    from toolkit.export import ExportJob, export as run_export
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    run = RunDir(run_dir)
    sources = _sources(run_dir, ts, None, None, [], [])
    out = {t: run_export(ExportJob(t, sources[t]), run, ui.log) for t in ts}
    emit(out, as_json, "\n".join(f"{t}: {r['float_dir']}  {r['quant_dir']}" for t, r in out.items()))


@app.command()
def convert(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = typer.Option(None, "--target"),
            all_targets: bool = typer.Option(False, "--all-targets"), as_json: bool = JSON):
    """Convert to Paddle Lite .nb for each target (and the x86 equivalence check)."""
    from toolkit.convert import ConvertJob, convert as run_convert
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    res = run_convert(ConvertJob(_targets(target, all_targets), _tasks(tasks)), RunDir(run_dir), ui.log)
    lines = []
    for name, r in res["targets"].items():
        for t in _tasks(tasks):
            f, q = r[t]["float"], r[t]["int8"]
            lines.append(f"{name:<16} {t}: float {f['bytes'] / 1e6:.2f} MB, int8 {q['bytes'] / 1e6:.2f} MB ({r[t]['int8_size_ratio']:.0%}), {q['int8_ops']} int8 ops")
    emit(res, as_json, "\n".join(lines))


@app.command()
def evaluate(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[Path] = typer.Option(None, "--data"),
             max_drop: float = typer.Option(1.0, "--max-drop", help="Allowed drop in points of det hmean / rec accuracy."),
             limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N samples."),
             skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"), as_json: bool = JSON):
    """Float vs quantized on the eval split with Paddle Inference."""
    from toolkit.evaluate import EvalJob, evaluate as run_evaluate
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    sources = _sources(run_dir, ts, None, None, [], [])
    res = run_evaluate(EvalJob(sources, _data_dir(run_dir, data), ts, max_drop, skip_bad_labels=skip_bad_labels, limit=limit), RunDir(run_dir), ui.log)
    emit(res, as_json, _metrics_table(res))


def _metrics_table(res: dict) -> str:
    lines = []
    for t in ("det", "rec"):
        if t in res:
            k = "hmean" if t == "det" else "acc"
            lines.append(f"{t}: {k} float {res[t]['float'][k]:.4f}  quant {res[t]['quant'][k]:.4f}  drop {res[t]['drop_points']:.2f} points")
    return "\n".join(lines)


@app.command()
def bundle(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = typer.Option(None, "--target"),
           all_targets: bool = typer.Option(False, "--all-targets"), as_json: bool = JSON):
    """Assemble the device bundle per target."""
    from toolkit.bundle import BundleJob, bundle as run_bundle
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    state = _run_state(run_dir)
    res = run_bundle(BundleJob(_targets(target, all_targets), _sources(run_dir, ts, None, None, [], []),
                               Path(state["data_dir"]) if state.get("data_dir") else None, ts), RunDir(run_dir), ui.log)
    emit(res, as_json, "\n".join(f"{n}: {r['path']} ({r['files']} files)" for n, r in res.items()))


@app.command()
def deploy(target: str = typer.Option("android-arm64", "--target"), device: str = typer.Option(..., "--device", help="dir:PATH"),
           run_dir: Path = RUN_DIR, as_json: bool = JSON):
    """Install the target's bundle on a device atomically (the previous one keeps working on failure)."""
    from toolkit.deploy import DeployJob, deploy as run_deploy
    from toolkit.rundir import RunDir
    from toolkit.targets import get_target

    res = run_deploy(DeployJob(get_target(target), device), RunDir(run_dir))
    emit(res, as_json, f"{res['device']}: release {res['release']} ({res['sent']} files sent, {res['unchanged']} unchanged) -> {res['path']}")


@app.command("run")
def run_cmd(target: Optional[List[str]] = typer.Option(None, "--target", help="Repeat for several targets (default android-arm64)."),
            all_targets: bool = typer.Option(False, "--all-targets"), run_dir: Path = RUN_DIR, tasks: str = TASKS,
            data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; default: synthetic data in RUN/data."),
            det: Optional[str] = SRC_OPTS["det"], rec: Optional[str] = SRC_OPTS["rec"],
            det_o: List[str] = SRC_OPTS["det_o"], rec_o: List[str] = SRC_OPTS["rec_o"],
            method: str = QUANT_OPTS["method"], steps: Optional[int] = QUANT_OPTS["steps"], batch_size: Optional[int] = QUANT_OPTS["batch_size"],
            lr: Optional[float] = QUANT_OPTS["lr"], skip_layer: List[str] = QUANT_OPTS["skip_layer"], pact: Optional[bool] = QUANT_OPTS["pact"],
            resume: bool = QUANT_OPTS["resume"], device: str = QUANT_OPTS["device"], seed: int = 0,
            max_drop: float = typer.Option(1.0, "--max-drop", help="Allowed drop in points; exceeded -> non-zero exit."),
            skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"),
            deploy_to: Optional[str] = typer.Option(None, "--deploy", help="Also deploy the first target's bundle, e.g. dir:PATH."),
            as_json: bool = JSON):
    """Every stage for one or more targets: quantize, export, convert, evaluate, bundle (and deploy)."""
    from toolkit.pipeline import RunJob, run_all
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    targets = _targets(target, all_targets)
    run = RunDir(run_dir)
    sources = _sources(run_dir, ts, det, rec, det_o, rec_o)
    job = RunJob(targets=targets, sources=sources, data_dir=data, tasks=ts, method=method, steps=steps, batch_size=batch_size,
                 learning_rate=lr, skip_layers=_skip_layers(skip_layer), pact=pact, resume=resume, seed=seed, device=device,
                 max_drop=max_drop, skip_bad_labels=skip_bad_labels)
    if data is not None:
        _data_dir(run_dir, data)
    else:
        from toolkit.rundir import atomic_write_json

        atomic_write_json(Path(run_dir) / "run.json", {**_run_state(run_dir), "data_dir": str(run.data())})
    report = run_all(job, run, ui)
    if deploy_to:
        from toolkit.deploy import DeployJob, deploy as run_deploy

        report["deploy"] = run_deploy(DeployJob(targets[0], deploy_to), run)
    lines = [_metrics_table(report["metrics"])]
    for name, t in report["targets"].items():
        for task in ts:
            if task in t:
                r = t[task]
                lines.append(f"{name:<16} {task}: int8 {r['int8_nb_bytes'] / 1e6:.2f} MB = {r['size_ratio']:.0%} of float, {r['int8_ops']} int8 ops")
        if "bundle" in t:
            lines.append(f"{name:<16} bundle: {t['bundle']['path']}")
    lines.append(f"report: {run.report_path()}  ({report['timings']['total']:.0f}s)")
    emit(report, as_json, "\n".join(lines))


@app.command()
def report(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = typer.Option(None, "--target"),
           all_targets: bool = typer.Option(True, "--all-targets/--no-all-targets"), as_json: bool = JSON):
    """Rebuild report.json from what the stages recorded."""
    from toolkit import report as reportmod
    from toolkit.rundir import RunDir

    run = RunDir(run_dir)
    rep = reportmod.write_report(run, _targets(target, all_targets and not target), _tasks(tasks), {}, sys.argv, None)
    emit(rep, as_json, f"wrote {run.report_path()}")


def main() -> None:
    """Console entry point: ToolkitError -> message + hint, exit 2; never a traceback."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # library chatter (setuptools, paddle)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "--json" in sys.argv[1:]:
        sys.stdout = sys.stderr  # only the JSON document goes to stdout (see emit)
    try:
        app()
    except ToolkitError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished stages are kept; re-run the same command (QAT: add --resume) to continue", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for TOOLKIT_DEBUG
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}", err=True)
        typer.echo("  hint: re-run with TOOLKIT_DEBUG=1 for the traceback and report it", err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
