"""Stage 1: quantization. QAT (train.py; data-parallel through distributed.py) or PTQ (ptq.py).

The entry point skips the work when the same job already ran in this run directory (the key
hashes the job, the model source and the data; not `--resume` or the hosts of a multi-node
job, which do not change the result).
"""

from __future__ import annotations

from typing import Callable

from toolkit.data.datasets import fingerprint, open_datasets
from toolkit.digest import hash_json
from toolkit.jobs import QuantJob
from toolkit.rundir import RunDir


def plan(job: QuantJob) -> QuantJob:
    """The job with its settings checked (config section, overrides, flags: before any work) and
    its data-parallel plan: --nproc/--devices, else the config's Quant.nproc (`auto`: a rank per core)."""
    import os

    from toolkit.stages.quantize.settings import settings_for

    settings = settings_for(job.task, job.source.load_config(), job.source.config, job.options)
    if job.options.method != "qat" or job.dist is not None:
        return job
    return job.model_copy(update={"dist": job.options.distributed(os.cpu_count(), str(settings.nproc))})


def quantize(job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    plan(job)
    options = job.options.model_dump(exclude={"resume", "skip_bad_labels", "nproc", "devices", "nodes", "master"})
    options["skip_layer"] = job.options.skip_patterns(job.task)
    if job.options.method == "ptq":
        options = {k: options[k] for k in ("method", "skip_layer", "seed")}
    elif not job.searching:
        options.pop("max_drop")
    key = hash_json({"options": options, "world_size": job.dist.world_size if job.dist else 1,
                     "source": job.source.fingerprint(), "data": fingerprint(job.task, open_datasets(job.datasets))})
    method = job.options.method
    outputs = [run.qat_state(job.task) if method == "qat" else run.ptq_model(job.task), run.quant_info(job.task, method)]

    def work():
        if method == "ptq":
            from toolkit.stages.quantize.ptq import run_ptq

            return run_ptq(job, run), outputs
        if job.dist:
            from toolkit.stages.quantize.distributed import launch

            return launch(job, run, progress, log), outputs
        from toolkit.stages.quantize.train import run_qat

        return run_qat(job, run, progress), outputs

    return run.run_stage(f"quantize:{job.task}", key, work, log)
