"""The local runner: every stage in this Python (the trainer stages) and the converter venv,
or, for stages that run side by side (`toolkit run` trains det and rec at once), each in a child
Python of its own: eager Paddle keeps about one core busy, so two models train in the time of one."""

from __future__ import annotations

import subprocess
import sys
import threading

from toolkit.runners.jobfiles import read_result, write_job
from toolkit.runners.envs import child_python_env


class LocalRunner:
    name = "local"

    def __init__(self):
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def quantize(self, job, run, progress=None, log=None):
        from toolkit.stages.quantize.stage import quantize

        return quantize(job, run, progress=progress, log=log)

    def export(self, job, run, log=None):
        from toolkit.stages.export import export

        return export(job, run, log)

    def evaluate(self, job, run, log=None, progress=None):
        from toolkit.stages.evaluate import evaluate

        return evaluate(job, run, log, progress)

    def convert(self, job, run, log=None):
        from toolkit.stages.convert import convert

        return convert(job, run, log)

    def in_child(self, stage: str, job, run, threads: int) -> dict:
        """`stage` in `python -m toolkit.runners.worker` with `threads` CPU threads; what it prints
        goes to RUN/jobs/NAME.log. Safe to call from several threads at once."""
        name, result_file = write_job(run, stage, job)
        log_file = run.job_log(name)
        env = child_python_env(OMP_NUM_THREADS=str(threads))
        with open(log_file, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "toolkit.runners.worker", str(run.root), name],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(run.root))
            with self._lock:
                self._children.add(proc)
            try:
                code = proc.wait()
            finally:
                with self._lock:
                    self._children.discard(proc)
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-6:])
        return read_result(result_file, name, f"a child process (its output: {log_file})", code, tail, prefix=False)

    def stop_children(self) -> None:
        """Interrupted: end every child stage (each leaves the run directory as it was)."""
        with self._lock:
            for proc in self._children:
                proc.terminate()
