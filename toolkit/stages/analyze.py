"""`toolkit analyze`: per-layer quantization sensitivity, written to analyze/<task>/sensitivity.json.

Quantize one layer at a time and rank by harm per extra byte (toolkit/stages/quantize/search.py),
then show how the task metric recovers as the top-ranked layers stay float.
"""

from __future__ import annotations

import time
from typing import Callable

from toolkit.data import datasets as datamod
from toolkit.digest import hash_json
from toolkit.jobs import AnalyzeJob, QuantOptions
from toolkit.models.build import build_model
from toolkit.rundir import RunDir, atomic_write_json
from toolkit.stages.quantize.search import prepare, rank_layers
from toolkit.stages.quantize.settings import settings_for


def analyze(job: AnalyzeJob, run: RunDir, progress: Callable | None = None, log: Callable[[str], None] | None = None) -> dict:
    cfg = job.source.load_config()
    settings = settings_for(job.task, cfg, job.source.config, QuantOptions()).model_copy(update={"calib_batches": job.calib_batches})
    probe = job.probe or settings.probe_samples
    key = hash_json({"task": job.task, "source": job.source.fingerprint(), "settings": settings.model_dump(), "probe": probe,
                     "data": datamod.fingerprint(job.task, datamod.open_datasets(job.datasets))})
    out = run.sensitivity(job.task)

    def work():
        t0 = time.monotonic()
        switch, search, ref = prepare(job.task, build_model(job.source), job.datasets, settings, 0, job.skip_bad_labels)
        float_metric = search.metric(ref)
        switch.quantize_only(set(switch.layers))
        full = search.metric(search.outputs(switch.forward))
        limit = settings.pre_training_samples or len(search.samples)
        float_sub = search.metric(ref[:limit])
        t1 = time.monotonic()
        rows = rank_layers(switch, search, ref, probe, progress)
        t2 = time.monotonic()
        ranking = [r["layer"] for r in rows]
        curve = []  # the metric with the top-k layers float: how quickly the ranking recovers accuracy
        for k in (1, 2, 4, 8, 16):
            if k > len(ranking):
                break
            switch.quantize_only(set(switch.layers) - set(ranking[:k]))
            m = search.metric(search.outputs(switch.forward, range(limit)))
            curve.append({"float_layers": k, "samples": limit, "metric": round(m, 6), "drop_points": round(100 * (float_sub - m), 3)})
        result = {"task": job.task, "layers": len(rows), "search_samples": len(search.samples), "probe_samples": probe,
                  "float_metric": round(float_metric, 6), "full_quant_metric": round(full, 6),
                  "full_quant_drop_points": round(100 * (float_metric - full), 3), "top_k_curve": curve, "ranking": rows,
                  "seconds": {"prepare": round(t1 - t0, 1), "per_layer": round((t2 - t1) / max(len(rows), 1), 2), "total": round(time.monotonic() - t0, 1)}}
        atomic_write_json(out, result)
        return {k: v for k, v in result.items() if k != "ranking"} | {"top": rows[:10]}, [out]

    return run.run_stage(f"analyze:{job.task}", key, work, log)
