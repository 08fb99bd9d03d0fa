"""Output for people: messages on stderr (stdout stays clean for --json), progress with an ETA."""

from __future__ import annotations

import sys
import time

import typer


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

        state: dict = {}
        tty = sys.stderr.isatty()

        def update(done: int, total: int, loss: float | None = None) -> None:
            if self.quiet:
                return
            now = time.monotonic()
            start = state.setdefault("start", (now, done))  # the first report: the rate counts from here
            if not tty:
                if done == total or done % max(1, total // 4) == 0:
                    rate = (now - start[0]) / (done - start[1]) if done > start[1] else None
                    self.log(f"{desc}: {done}/{total}" + (f" loss {loss:.4f}" if loss is not None else "")
                             + (f", about {rate * (total - done):.0f}s left" if rate and done < total else ""))
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
