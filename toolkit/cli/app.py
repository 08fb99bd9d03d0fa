"""What the `toolkit` commands share: the Typer app, common options, output, and how flags
become run-directory state. The commands live in cli/stages.py (the pipeline), cli/devices.py
(deploy, devices) and cli/admin.py (targets, models, data, set-up, images, doctor); cli/main.py
is the entry point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolkit.errors import ToolkitError
from toolkit.ui import UI  # noqa: F401  (the commands' output helper)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize PP-OCR models, convert them with Paddle Lite, and deliver device bundles.")

RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="Run directory shared by all stages.")
RUNNER = typer.Option(os.environ.get("TOOLKIT_RUNNER", "local"), "--runner",
                      help="local, docker (each stage in its container) or auto (docker when an engine answers); default $TOOLKIT_RUNNER or local.")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON on stdout (errors too).")
TASKS = typer.Option("det,rec", "--tasks", help="Which models: det, rec or det,rec.")
TARGETS = typer.Option(None, "--target", help="A target in targets/ (repeat for several; default: the default target).")
DATA = typer.Option(None, "--data", help="A dataset folder (PaddleOCR label files); repeat for several. Default: what this run directory used.")
SOURCES = dict(
    det=typer.Option(None, "--det", help="det model: zoo:NAME, an inference model dir, or a PaddleOCR config .yml."),
    rec=typer.Option(None, "--rec", help="rec model: zoo:NAME, an inference model dir, or a PaddleOCR config .yml."),
    det_o=typer.Option([], "--det-override", "-O", help="Section.key=value override of the det config (PaddleOCR's -o)."),
    rec_o=typer.Option([], "--rec-override", help="Section.key=value override of the rec config."),
)
DEFAULT_TARGET = "android-arm64"
INTERRUPTED = 130


# Results go to the real stdout; with --json, main() points sys.stdout at stderr for everything
# else, so libraries that print (ppocr logs to stdout on import) cannot corrupt the JSON.
RESULTS = sys.stdout


def emit(obj, as_json: bool, human: str | None = None) -> None:
    text = json.dumps(obj, indent=2, default=str) if as_json or human is None else human
    typer.echo(text, file=RESULTS)


def done_with_problems(message: str, hint: str) -> None:
    """The command's result is printed (one document with --json), yet the outcome is a failure:
    say so on stderr and exit 2."""
    typer.echo(f"error: {message}", err=True)
    typer.echo(f"  hint: {hint}", err=True)
    raise typer.Exit(2)


def table(rows: list[tuple]) -> str:
    """Left-aligned columns, for the human output of list-like commands."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ------------------------------------------------------------------ shared between commands
def targets(names: Optional[List[str]], all_targets: bool = False):
    from toolkit.targets import get_target, list_targets

    return list_targets() if all_targets else [get_target(n) for n in (names or [DEFAULT_TARGET])]


def sources(run, tasks: list[str], det: str | None = None, rec: str | None = None, det_o=(), rec_o=()):
    """Model sources from flags, else from what this run directory used before, else the zoo."""
    from toolkit.models.sources import resolve_source

    prev = run.state().get("sources", {})
    given = {"det": (det, det_o), "rec": (rec, rec_o)}
    out = {}
    for t in tasks:
        spec, o = given[t]
        if spec is None and not o and t in prev:
            spec, o = prev[t]["spec"], prev[t]["overrides"]
        out[t] = resolve_source(t, spec, tuple(o))
    return out


def datasets(run, data: Optional[List[Path]]) -> list[Path]:
    """--data folders (remembered in run.json), else the ones this run directory used before."""
    from toolkit.data.datasets import open_datasets

    if data:
        return [d.path for d in open_datasets(data)]
    known = run.state().get("datasets")
    if not known:
        raise ToolkitError(f"no dataset for {run.root}", hint="pass --data DIR (det/ and rec/ label files), or make one with "
                                                               "`toolkit data synth` / `toolkit data real`, or run `toolkit run`")
    return [Path(p) for p in known]


def remember(run, sources: dict, datasets: list[Path] | None = None) -> None:
    """Write the sources and datasets a command was given into run.json (once the job is valid),
    so the next command on this run directory needs no flags."""
    state = run.state()
    new = {"sources": {**state.get("sources", {}), **{t: {"spec": s.spec, "overrides": list(s.overrides)} for t, s in sources.items()}}}
    if datasets is not None:
        new["datasets"] = [str(p) for p in datasets]
    if any(state.get(k) != v for k, v in new.items()):
        run.update_state(**new)


def runner(name: str, ui: UI):
    from toolkit.runners import get_runner

    return get_runner(name, ui.log)


def metrics_table(res: dict) -> str:
    from toolkit.tasks import get_task

    return "\n".join(get_task(t).summary_line(r) + f" ({r['judged']})" for t, r in res.items() if isinstance(r, dict) and "judged" in r)
