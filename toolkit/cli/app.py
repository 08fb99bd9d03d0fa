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
images_app = typer.Typer(no_args_is_help=True, help="Docker images: trainer, converter, runtime (docker/).")
app.add_typer(images_app, name="images")

RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="Run directory shared by all stages.")
RUNNER = typer.Option(os.environ.get("TOOLKIT_RUNNER", "local"), "--runner",
                      help="local, docker (each stage in its container) or auto (docker when an engine answers); default $TOOLKIT_RUNNER or local.")
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
    from toolkit.models.sources import resolve_source
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


_RUNNERS: dict = {}


def _runner(name: str, ui: "UI"):
    """The stage runner (toolkit/runners.py), one per command."""
    if name not in _RUNNERS:
        from toolkit.runners import get_runner

        _RUNNERS[name] = get_runner(name, ui.log)
    return _RUNNERS[name]


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
    from toolkit.models.sources import zoo_table

    rows = zoo_table()
    emit(rows, as_json, "\n".join(f"{r['name']:<26} {r['task']}  {r['bytes'] / 1e6:5.1f} MB  {r['description']}" for r in rows))


@data_app.command("synth")
def data_synth(out: Path = typer.Option(Path("data/synth"), "--out", help="Output folder."),
               det_train: int = 40, det_eval: int = 100, rec_train: int = 800, rec_eval: int = 500,
               seed: int = 0, as_json: bool = JSON):
    """Render a det set and a rec set of realistic text images with PaddleOCR labels."""
    from toolkit.data.synth import synth_dataset

    ui = UI(as_json)
    summary = synth_dataset(out, det_train, det_eval, rec_train, rec_eval, seed=seed, progress=ui.progress("synth"))
    emit(summary, as_json, f"wrote {out}: {summary['counts']}")


@data_app.command("check")
def data_check(data: Path = typer.Option(..., "--data"), skip_bad_labels: bool = False, as_json: bool = JSON):
    """Validate a dataset's label files (file:line for every problem)."""
    from toolkit.data.datasets import label_file
    from toolkit.data.labels import read_det_labels, read_rec_labels

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
    from toolkit.runners.envs import ensure_converter

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
    search=typer.Option(True, "--search/--no-search", help="Keep the most harmful layers float, one by one, until the drop is within --max-drop "
                        "(measured on held-out training samples); --no-search quantizes every layer not skipped by hand."),
)
MAX_DROP = typer.Option(1.0, "--max-drop", help="Allowed accuracy drop in points (hmean / line accuracy).")
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
             search: bool = QUANT_OPTS["search"], max_drop: float = MAX_DROP,
             skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"), runner: str = RUNNER, as_json: bool = JSON,
             devices: Optional[str] = typer.Option(None, "--devices", help="QAT data-parallel on these GPUs (e.g. 0,1,2,3) through paddle.distributed.launch."),
             nproc: Optional[int] = typer.Option(None, "--nproc", help="QAT data-parallel in N CPU processes (gloo) through paddle.distributed.launch."),
             nodes: Optional[str] = typer.Option(None, "--nodes", help="host1,host2,...: multi-node QAT; run the same command on every node."),
             master: Optional[str] = typer.Option(None, "--master", help="HOST:PORT of the launcher's master (with --nodes), the same on every node.")):
    """Quantization-aware training (or PTQ) of det and/or rec."""
    from toolkit.stages.quantize.distributed import parse_options
    from toolkit.stages.quantize.stage import QuantJob, quantize as run_quantize
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    run = RunDir(run_dir)
    sources = _sources(run_dir, ts, det, rec, det_o, rec_o)
    data_dir = _data_dir(run_dir, data)
    skips = _skip_layers(skip_layer)
    dist, device = parse_options(devices, nproc, nodes, master, device)
    out = {}
    for t in ts:
        job = QuantJob(task=t, source=sources[t], data_dir=data_dir, method=method, steps=steps, batch_size=batch_size,
                       learning_rate=lr, skip_layers=skips.get(t, []), pact=pact, resume=resume, seed=seed, device=device,
                       skip_bad_labels=skip_bad_labels, max_drop=max_drop if search and method == "qat" else None, dist=dist)
        out[t] = _runner(runner, ui).quantize(job, run, progress=ui.progress(f"{method.upper()} {t}"), log=ui.log)
    emit(out, as_json, "\n".join(f"{t}: {r['method']} {'(up to date)' if r.get('skipped') else 'done'}" for t, r in out.items()))


@app.command()
def export(run_dir: Path = RUN_DIR, tasks: str = TASKS, runner: str = RUNNER, as_json: bool = JSON):
    """Export the float baseline and the quantized inference models."""
    from toolkit.stages.export import ExportJob, export as run_export
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    run = RunDir(run_dir)
    sources = _sources(run_dir, ts, None, None, [], [])
    out = {t: _runner(runner, ui).export(ExportJob(t, sources[t]), run, ui.log) for t in ts}
    emit(out, as_json, "\n".join(f"{t}: {r['float_dir']}  {r['quant_dir']}" for t, r in out.items()))


@app.command()
def convert(run_dir: Path = RUN_DIR, tasks: str = TASKS, target: Optional[List[str]] = typer.Option(None, "--target"),
            all_targets: bool = typer.Option(False, "--all-targets"), runner: str = RUNNER, as_json: bool = JSON):
    """Convert to Paddle Lite .nb for each target (and the x86 equivalence check)."""
    from toolkit.stages.convert import ConvertJob, convert as run_convert
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    res = _runner(runner, ui).convert(ConvertJob(_targets(target, all_targets), _tasks(tasks)), RunDir(run_dir), ui.log)
    lines = []
    for name, r in res["targets"].items():
        for t in _tasks(tasks):
            f, q = r[t]["float"], r[t]["int8"]
            lines.append(f"{name:<16} {t}: float {f['bytes'] / 1e6:.2f} MB, int8 {q['bytes'] / 1e6:.2f} MB ({r[t]['int8_size_ratio']:.0%}), {q['int8_ops']} int8 ops")
    emit(res, as_json, "\n".join(lines))


@app.command()
def analyze(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[Path] = typer.Option(None, "--data"),
            det: Optional[str] = SRC_OPTS["det"], rec: Optional[str] = SRC_OPTS["rec"],
            det_o: List[str] = SRC_OPTS["det_o"], rec_o: List[str] = SRC_OPTS["rec_o"],
            probe: Optional[int] = typer.Option(None, "--probe", help="Samples per layer measurement (default: the config's Quant.probe_samples)."),
            skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"), as_json: bool = JSON):
    """Per-layer quantization sensitivity: quantize one layer at a time, rank by output error, and show
    how the task metric recovers as the top-ranked layers stay float."""
    from toolkit.rundir import RunDir
    from toolkit.stages.quantize.search import AnalyzeJob, analyze as run_analyze

    ui = UI(as_json)
    ts = _tasks(tasks)
    sources = _sources(run_dir, ts, det, rec, det_o, rec_o)
    data_dir = _data_dir(run_dir, data)
    out = {t: run_analyze(AnalyzeJob(t, sources[t], data_dir, probe=probe, skip_bad_labels=skip_bad_labels), RunDir(run_dir),
                          progress=ui.progress(f"sensitivity {t}"), log=ui.log) for t in ts}
    emit(out, as_json, "\n".join(_sensitivity_table(t, r) for t, r in out.items()))


def _sensitivity_table(task: str, r: dict) -> str:
    lines = [f"{task}: {r['layers']} quantizable layers, {r['search_samples']} held-out samples; float {r['float_metric']:.4f}, "
             f"every layer quantized {r['full_quant_metric']:.4f} (drop {r['full_quant_drop_points']:.2f} points); {r['seconds']['total']:.0f} s",
             "  rank  output error  layer"]
    lines += [f"  {x['rank']:>4}  {x['error']:>12.5f}  {x['layer']}" for x in r["top"]]
    lines += ["  float layers -> drop: " + ", ".join(f"top {c['float_layers']}: {c['drop_points']:.2f}" for c in r["top_k_curve"])]
    return "\n".join(lines)


@app.command()
def evaluate(run_dir: Path = RUN_DIR, tasks: str = TASKS, data: Optional[Path] = typer.Option(None, "--data"),
             max_drop: float = typer.Option(1.0, "--max-drop", help="Allowed drop in points of det hmean / rec accuracy."),
             limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N samples."),
             skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"), runner: str = RUNNER, as_json: bool = JSON):
    """Float vs quantized on the eval split with Paddle Inference."""
    from toolkit.stages.evaluate import EvalJob, evaluate as run_evaluate
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    sources = _sources(run_dir, ts, None, None, [], [])
    res = _runner(runner, ui).evaluate(EvalJob(sources, _data_dir(run_dir, data), ts, max_drop, skip_bad_labels=skip_bad_labels, limit=limit), RunDir(run_dir), ui.log)
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
    from toolkit.stages.bundle import BundleJob, bundle as run_bundle
    from toolkit.rundir import RunDir

    ui = UI(as_json)
    ts = _tasks(tasks)
    state = _run_state(run_dir)
    res = run_bundle(BundleJob(_targets(target, all_targets), _sources(run_dir, ts, None, None, [], []),
                               Path(state["data_dir"]) if state.get("data_dir") else None, ts), RunDir(run_dir), ui.log)
    emit(res, as_json, "\n".join(f"{n}: {r['path']} ({r['files']} files)" for n, r in res.items()))


SSH_OPTS = {
    "key": typer.Option(None, "--ssh-key", help="ssh: private key file (key authentication only; or TOOLKIT_SSH_KEY)."),
    "known_hosts": typer.Option(None, "--known-hosts", help="ssh: known_hosts file to check host keys against (or TOOLKIT_SSH_KNOWN_HOSTS)."),
    "accept_new": typer.Option(False, "--accept-new-host-keys", help="ssh: trust and record a host key seen for the first time."),
}


def _ssh_options(key: Optional[Path], known_hosts: Optional[Path], accept_new: bool) -> dict:
    return {"identity": str(key) if key else None, "known_hosts": str(known_hosts) if known_hosts else None, "accept_new_host_keys": accept_new}


@app.command()
def deploy(target: str = typer.Option("android-arm64", "--target"),
           device: Optional[List[str]] = typer.Option(None, "--device", help="adb:SERIAL, ssh:user@host[:port] or dir:PATH; repeat for several."),
           serial: Optional[List[str]] = typer.Option(None, "--serial", help="A device serial (adb) or user@host[:port] (ssh) for the target's transport."),
           all_devices: bool = typer.Option(False, "--all-devices", help="Every adb device online."),
           smoke: bool = typer.Option(False, "--smoke", help="After installing, run the bundle's smoke command on the device."),
           bench: bool = typer.Option(False, "--bench", help="After installing, benchmark with the target's threads and power mode."),
           warmup: int = typer.Option(2, "--warmup", min=0), repeats: int = typer.Option(10, "--repeats", min=1),
           ssh_key: Optional[Path] = SSH_OPTS["key"], known_hosts: Optional[Path] = SSH_OPTS["known_hosts"],
           accept_new_host_keys: bool = SSH_OPTS["accept_new"], run_dir: Path = RUN_DIR, as_json: bool = JSON):
    """Install the target's bundle on devices atomically (the previous one keeps working on failure), in parallel."""
    from toolkit.stages.deploy import DeployJob, deploy_devices, resolve_devices
    from toolkit.rundir import RunDir
    from toolkit.targets import get_target

    ui = UI(as_json)
    t = get_target(target)
    devices = resolve_devices(t, device or [], serial or [], all_devices)
    job = DeployJob(t, "", smoke, bench, warmup, repeats, _ssh_options(ssh_key, known_hosts, accept_new_host_keys))
    res = deploy_devices(job, devices, RunDir(run_dir), ui.log)
    emit(res, as_json, _deploy_table(res))
    failed = [r for r in res["devices"] if r["status"] != "ok"]
    if failed:
        first = failed[0]
        raise ToolkitError(f"deploy failed on {len(failed)} of {len(res['devices'])} device(s): {first['error']}", hint=first.get("hint"))


def _deploy_table(res: dict) -> str:
    rows = [("device", "status", "release", "sent", "unchanged", "smoke", "bench total ms", "")]
    for r in res["devices"]:
        bench = (r.get("benchmark") or {}).get("result", {}).get("timings_ms", {}).get("total")
        smoke = r.get("smoke")
        rows.append((r["device"], r["status"], r.get("release") or "-", str(r.get("sent", "-")), str(r.get("unchanged", "-")),
                     "-" if smoke is None else ("ok" if smoke["ok"] else f"exit {smoke['returncode']}" if smoke["returncode"] else "no result"),
                     "-" if bench is None else f"{bench:.1f}", (r.get("error") or "").removeprefix(f"{r['device']}: ")[:90]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


@app.command()
def devices(device: Optional[List[str]] = typer.Option(None, "--device", help="Also probe these (ssh:user@host[:port], adb:SERIAL)."),
            ssh_key: Optional[Path] = SSH_OPTS["key"], known_hosts: Optional[Path] = SSH_OPTS["known_hosts"],
            accept_new_host_keys: bool = SSH_OPTS["accept_new"], as_json: bool = JSON):
    """Connected adb devices (and any --device named), their ABIs and the targets that accept them."""
    from toolkit.stages.deploy import list_devices
    from toolkit.targets import list_targets

    rows = list_devices(list_targets(), device or [], _ssh_options(ssh_key, known_hosts, accept_new_host_keys))
    table = [("device", "state", "model", "abi", "targets")] + [
        (r["device"], r["state"], r.get("model") or "-", ",".join(r["abis"]) or "-", ",".join(r["targets"]) or r.get("error", "none")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    emit(rows, as_json, "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table) if rows else "no devices")


@app.command("run")
def run_cmd(target: Optional[List[str]] = typer.Option(None, "--target", help="Repeat for several targets (default android-arm64)."),
            all_targets: bool = typer.Option(False, "--all-targets"), run_dir: Path = RUN_DIR, tasks: str = TASKS,
            data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; default: synthetic data in RUN/data."),
            det: Optional[str] = SRC_OPTS["det"], rec: Optional[str] = SRC_OPTS["rec"],
            det_o: List[str] = SRC_OPTS["det_o"], rec_o: List[str] = SRC_OPTS["rec_o"],
            method: str = QUANT_OPTS["method"], steps: Optional[int] = QUANT_OPTS["steps"], batch_size: Optional[int] = QUANT_OPTS["batch_size"],
            lr: Optional[float] = QUANT_OPTS["lr"], skip_layer: List[str] = QUANT_OPTS["skip_layer"], pact: Optional[bool] = QUANT_OPTS["pact"],
            resume: bool = QUANT_OPTS["resume"], device: str = QUANT_OPTS["device"], seed: int = 0,
            search: bool = QUANT_OPTS["search"], max_drop: float = MAX_DROP,
            skip_bad_labels: bool = typer.Option(False, "--skip-bad-labels"),
            deploy_to: Optional[str] = typer.Option(None, "--deploy", help="Also deploy the first target's bundle, e.g. dir:PATH."),
            runner: str = RUNNER, as_json: bool = JSON):
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
                 max_drop=max_drop, search=search, skip_bad_labels=skip_bad_labels, runner=runner)
    if data is not None:
        _data_dir(run_dir, data)
    else:
        from toolkit.rundir import atomic_write_json

        atomic_write_json(Path(run_dir) / "run.json", {**_run_state(run_dir), "data_dir": str(run.data())})
    report = run_all(job, run, ui)
    if deploy_to:
        from toolkit.stages.deploy import DeployJob, deploy as run_deploy

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
    """Rebuild report.json and report.html from what the stages recorded."""
    from toolkit.report import summary as reportmod
    from toolkit.rundir import RunDir

    run = RunDir(run_dir)
    rep = reportmod.write_report(run, _targets(target, all_targets and not target), _tasks(tasks), {}, sys.argv, None)
    emit(rep, as_json, f"wrote {run.report_path()}")


# ------------------------------------------------------------------ containers
@images_app.command("build")
def images_build(target: Optional[List[str]] = typer.Option(None, "--target", help="Targets whose converter/runtime images to build (default android-arm64)."),
                 all_targets: bool = typer.Option(False, "--all-targets"),
                 kind: Optional[List[str]] = typer.Option(None, "--kind", help="trainer, converter, runtime; repeat (default trainer and converter)."),
                 gpu: bool = typer.Option(False, "--gpu", help="Also the GPU trainer (paddlepaddle-gpu, CUDA)."),
                 base_image: Optional[str] = typer.Option(None, "--base-image", help="A local Debian bookworm image; default: made with debootstrap."),
                 pip_index_url: str = typer.Option("https://pypi.org/simple", "--pip-index-url"),
                 pip_extra_index_url: str = typer.Option("", "--pip-extra-index-url"),
                 wheelhouse: bool = typer.Option(True, "--wheelhouse/--no-wheelhouse", help="Pre-download wheels with the host's pip (else the image's pip uses the index)."),
                 ca_cert: Optional[List[Path]] = typer.Option(None, "--ca-cert", help="Extra CA certificates (PEM) trusted in the images, e.g. a TLS-intercepting proxy's."),
                 apt_mirror: str = typer.Option("http://deb.debian.org/debian", "--apt-mirror"),
                 python37_sha256: Optional[str] = typer.Option(None, "--python37-sha256", help="Build CPython 3.7 from python.org's source (when no local 3.7)."),
                 runtime_sha256: Optional[List[str]] = typer.Option(None, "--runtime-sha256", help="TARGET=SHA256 of the Paddle Lite archive when the target pins none."),
                 ndk_sha256: Optional[str] = typer.Option(None, "--ndk-sha256", help="sha256 of the Android NDK zip (android-* runtime images)."),
                 force: bool = typer.Option(False, "--force", help="Rebuild even when the tag exists."), as_json: bool = JSON):
    """Build the images (tagged by a hash of their inputs: unchanged images are not rebuilt)."""
    from toolkit.runners.images import BuildOptions, build_images

    ui = UI(as_json)
    shas = {}
    for item in runtime_sha256 or []:
        name, sep, sha = item.partition("=")
        if not sep or len(sha) != 64:
            raise ToolkitError(f"--runtime-sha256 {item}: expected TARGET=SHA256 (64 hex characters)")
        shas[name] = sha.lower()
    opts = BuildOptions(base_image=base_image, pip_index_url=pip_index_url, pip_extra_index_url=pip_extra_index_url, wheelhouse=wheelhouse,
                        ca_certs=list(ca_cert or []), apt_mirror=apt_mirror, python37_sha256=python37_sha256, runtime_sha256=shas,
                        ndk_sha256=ndk_sha256, force=force)
    res = build_images(_targets(target, all_targets), list(kind or ["trainer", "converter"]), opts,
                       trainer_variants=["cpu", "gpu"] if gpu else ["cpu"], log=ui.log)
    emit(res, as_json, "\n".join(f"{r['tag']:<44} {'built in %.0fs' % r['seconds'] if r['built'] else 'up to date (no build)'}" for r in res))


@app.command()
def doctor(target: Optional[List[str]] = typer.Option(None, "--target"), as_json: bool = JSON):
    """Engine, GPUs, adb, interpreters, converter environments, images: what is there and the fix for what is not."""
    from toolkit.runners.doctor import checks, render
    from toolkit.targets import list_targets

    rows = checks(_targets(target) if target else list_targets())
    emit(rows, as_json, render(rows))


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
