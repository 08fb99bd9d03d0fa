"""The `toolkit` command: a thin Typer layer that builds jobs from flags and calls the stages.

Commands live in cli/stages.py (the pipeline), cli/devices.py (deploy, devices) and
cli/admin.py (targets, models, data, set-up, images, doctor); this module holds what they
share. Every user-fixable problem is a ToolkitError, printed as one `error:` line plus a hint
with exit status 2 (and, with --json, a JSON document on stdout); nothing reaches the user as a
traceback (TOOLKIT_DEBUG=1 shows one). Ctrl-C exits 130 with the way to continue.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from toolkit.errors import ToolkitError

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


class UI:
    """Human output on stderr (stdout stays clean for --json), progress with an ETA for long work."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            typer.echo(msg, err=True)

    def progress(self, desc: str):
        """A tqdm bar on a terminal; in logs (CI), a line at every quarter of the work with the time left."""
        from tqdm import tqdm

        state: dict = {"t0": time.monotonic()}
        tty = sys.stderr.isatty()

        def update(done: int, total: int, loss: float | None = None) -> None:
            if self.quiet:
                return
            if not tty:
                if done == total or done % max(1, total // 4) == 0:
                    spent = time.monotonic() - state["t0"]
                    eta = spent / max(done - state.setdefault("first", done - 1), 1) * (total - done)
                    self.log(f"{desc}: {done}/{total}" + (f" loss {loss:.4f}" if loss is not None else "")
                             + f", {spent:.0f}s, about {eta:.0f}s left")
                return
            if "bar" not in state:
                state["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, initial=done - 1, leave=True, mininterval=1.0)
            b = state["bar"]
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
    run.update_state(sources={**prev, **{t: {"spec": s.spec, "overrides": list(s.overrides)} for t, s in out.items()}})
    return out


def datasets(run, data: Optional[List[Path]]) -> list[Path]:
    """--data folders (remembered in run.json), else the ones this run directory used before."""
    from toolkit.data.datasets import open_datasets

    if data:
        found = [d.path for d in open_datasets(data)]
        run.update_state(datasets=[str(p) for p in found])
        return found
    known = run.state().get("datasets")
    if not known:
        raise ToolkitError(f"no dataset for {run.root}", hint="pass --data DIR (det/ and rec/ label files), or make one with "
                                                               "`toolkit data synth` / `toolkit data real`, or run `toolkit run`")
    return [Path(p) for p in known]


def runner(name: str, ui: UI):
    from toolkit.runners import get_runner

    return get_runner(name, ui.log)


def metrics_table(res: dict) -> str:
    from toolkit.tasks import get_task

    return "\n".join(get_task(t).summary_line(r) + f" ({r['judged']})" for t, r in res.items() if isinstance(r, dict) and "judged" in r)


def main() -> None:
    """Console entry point; see the module docstring for what each outcome prints and returns."""
    import warnings

    from typer._click import exceptions as clickx  # Typer's own copy of click

    from toolkit.cli import admin, devices, stages  # noqa: F401  (registers the commands)

    warnings.filterwarnings("ignore", category=UserWarning)  # library chatter (setuptools, paddle)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    as_json = "--json" in sys.argv[1:]
    if as_json:
        sys.stdout = sys.stderr  # only the JSON document goes to stdout (see emit)

    def fail(message: str, hint: str | None, code: int) -> None:
        typer.echo(message if code == 3 else f"error: {message}", err=True)
        if hint:
            typer.echo(f"  hint: {hint}", err=True)
        if as_json:
            typer.echo(json.dumps({"status": "error", "error": {"message": message, "hint": hint}}, indent=2), file=RESULTS)
        sys.exit(code)

    try:
        code = app(standalone_mode=False)
    except ToolkitError as exc:
        fail(exc.message, exc.hint, 2)
    except clickx.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help(), err=True)
        sys.exit(0)
    except clickx.ClickException as exc:  # usage errors: unknown option, bad value for a typed option
        fail(exc.format_message(), f"see `toolkit {' '.join(a for a in sys.argv[1:3] if not a.startswith('-'))} --help`", 2)
    except typer.Abort:
        fail("aborted", None, 1)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for TOOLKIT_DEBUG
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        fail(f"internal error: {type(exc).__name__}: {last}", "re-run with TOOLKIT_DEBUG=1 for the traceback and report it", 3)
    if code == INTERRUPTED:  # Ctrl-C: Typer turns KeyboardInterrupt into exit code 130
        fail("interrupted: finished stages are kept", "re-run the same command to continue (QAT: add --resume to continue "
             "from its last checkpoint)", INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
