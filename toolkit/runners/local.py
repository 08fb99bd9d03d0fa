"""The local runner: every stage in this Python (the trainer stages) and the converter venv."""

from __future__ import annotations


class LocalRunner:
    name = "local"

    def quantize(self, job, run, progress=None, log=None):
        from toolkit.stages.quantize.stage import quantize

        return quantize(job, run, progress=progress, log=log)

    def export(self, job, run, log=None):
        from toolkit.stages.export import export

        return export(job, run, log)

    def evaluate(self, job, run, log=None):
        from toolkit.stages.evaluate import evaluate

        return evaluate(job, run, log)

    def convert(self, job, run, log=None):
        from toolkit.stages.convert import convert

        return convert(job, run, log)
