"""The `toolkit` console entry point.

Every user-fixable problem is a ToolkitError, printed as one `error:` line plus a hint with exit
status 2 (and, with --json, a JSON document on stdout); usage errors the same way; nothing
reaches the user as a traceback (TOOLKIT_DEBUG=1 shows one). Ctrl-C exits 130 with the way to
continue.
"""

from __future__ import annotations

import json
import os
import sys

import typer

from toolkit.cli import admin, devices, stages  # noqa: F401  (registers the commands)
from toolkit.cli.app import INTERRUPTED, RESULTS, app
from toolkit.errors import ToolkitError


def main() -> None:
    """Console entry point; see the module docstring for what each outcome prints and returns."""
    import warnings

    from typer._click import exceptions as clickx  # Typer's own copy of click

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
    except OSError as exc:  # the filesystem said no where no stage expected it
        where = exc.filename or "a file"
        fail(f"{where}: {exc.strerror or exc}", "check the path, its permissions and the free disk space", 2)
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
