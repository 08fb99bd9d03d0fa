"""The automatic float fallback (`toolkit quantize --search`, on by default for QAT) and the
per-layer sensitivity ranking it and `toolkit analyze` share.

Both work on a QAT-wrapped model whose fake-quant layers can be switched on and off without
rebuilding it (`GatedQuant`: one Paddle Inference program, like every forward pass here that is
not training), measured on a held-out search set of training samples that QAT never trains on
(`SearchSet`), so the eval splits stay untouched for the verdict. The task supplies the metric;
nothing here knows which task it measures.

Ranking: each layer is fake-quantized alone and its harm is how far the network output moves
from float (`Task.output_error`); layers are kept float in order of harm per extra byte (a
float weight costs 3 bytes more than an int8 one), so cheap culprits go first and the big
point-wise convolutions only when nothing cheaper helps.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.data.datasets import open_datasets, train_and_search
from toolkit.errors import ToolkitError
from toolkit.stages.quantize.gated import GatedQuant, static_forward
from toolkit.stages.quantize.ops import calibrate, wrap_qat
from toolkit.stages.quantize.settings import QuantSettings
from toolkit.tasks import get_task
from toolkit.tasks.base import Batch, Task

CALIB_STEP0 = 1_000_000   # calibration draws training batches past the schedule: same data, other draws
EXTRA_BYTES_PER_WEIGHT = 3  # int8 stores 1 byte per weight, float 4


@dataclass
class SearchSet:
    """Samples held out of QAT training, their inputs made once, and the task's metric on them."""

    task: Task
    samples: list
    cfg: dict
    batches: list[Batch] = field(default_factory=list)
    CHUNK = 25                                    # samples per step of `within` (early stopping)

    @classmethod
    def load(cls, task_name: str, datasets: list[Path], cfg: dict, settings: QuantSettings, skip_bad: bool) -> "SearchSet":
        task = get_task(task_name)
        _, samples = train_and_search(task_name, open_datasets(datasets), cfg, settings.search_samples, skip_bad)
        if not samples:
            raise ToolkitError(f"no {task_name} training samples left to hold out for the float-fallback search",
                               hint="add training samples, or turn the search off with --no-search")
        s = cls(task, samples, cfg)
        s.batches = [task.batch(samples, idx, cfg) for idx in task.groups(samples, cfg)]
        return s

    def outputs(self, forward, indices: range | None = None) -> list[np.ndarray]:
        """Outputs of the samples in `indices` (default all), in that order."""
        want = set(indices if indices is not None else range(len(self.samples)))
        sub = []
        for b in self.batches:
            rows = [j for j, i in enumerate(b.index) if i in want]
            if rows:
                sub.append(Batch(b.x[rows], [b.index[j] for j in rows], [b.meta[j] for j in rows] if b.meta else []))
        outs, _ = self.task.infer(forward, sub)
        return [outs[i] for i in sorted(want)]

    def metas(self, n: int) -> list:
        by_index = {i: (b.meta[j] if b.meta else None) for b in self.batches for j, i in enumerate(b.index)}
        return [by_index[i] for i in range(n)]

    def metric(self, outs: list[np.ndarray]) -> float:
        """The task's metric on the first len(outs) samples."""
        n = len(outs)
        return float(self.task.score(outs, self.samples[:n], self.cfg, self.metas(n))[self.task.metric])

    def within(self, forward, float_metric: float, budget_points: float, limit: int | None = None) -> dict:
        """Is the metric on the first `limit` samples within `budget_points` of float?

        Where the metric is the share of correct samples, samples are read in chunks and a check
        stops as soon as a miss is certain (no remaining sample could bring it back): the same
        decision as a full pass, at a fraction of the cost for hopeless configurations."""
        n = min(limit or len(self.samples), len(self.samples))
        if not self.task.counts_correct:
            m = self.metric(self.outputs(forward, range(n)))
            return {"ok": 100 * (float_metric - m) <= budget_points, "metric": m, "samples": n}
        right = seen = 0
        while seen < n:
            end = min(seen + self.CHUNK, n)
            outs = self.outputs(forward, range(seen, end))
            right += sum(bool(self.task.correct(o, s, self.cfg)) for o, s in zip(outs, self.samples[seen:end]))
            seen = end
            best = (right + n - seen) / n
            if seen < n and 100 * (float_metric - best) > budget_points:
                return {"ok": False, "metric": None, "samples": seen, "at_most": round(best, 6)}
        return {"ok": 100 * (float_metric - right / n) <= budget_points, "metric": right / n, "samples": n}


def rank_layers(switch: GatedQuant, search: SearchSet, float_ref: list[np.ndarray], probe: int,
                progress: Callable[[int, int, float], None] | None = None) -> list[dict]:
    """Quantize one layer at a time; rank by output error per extra byte kept float (largest first)."""
    probe = min(probe, len(search.samples))
    ref = float_ref[:probe]
    rows = []
    names = list(switch.layers)
    for i, name in enumerate(names):
        switch.quantize_only({name})
        err = search.task.output_error(search.outputs(switch.forward, range(probe)), ref)
        weights = switch.weight_count(name)
        rows.append({"layer": name, "error": round(err, 6), "weights": weights,
                     "harm_per_kb": round(err / max(EXTRA_BYTES_PER_WEIGHT * weights / 1e3, 1e-3), 6)})
        if progress:
            progress(i + 1, len(names), None)
    rows.sort(key=lambda r: -r["harm_per_kb"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def _step(float_set: list[str], check: dict, float_metric: float) -> dict:
    """One step of a search's history: the layers float so far and the check (`SearchSet.within`)."""
    return {"float_layers": len(float_set), "added": float_set[-1] if float_set else None, **check,
            "drop_points": None if check["metric"] is None else round(100 * (float_metric - check["metric"]), 3)}


def fallback_search(switch: GatedQuant, search: SearchSet, ranking: list[str], float_metric: float, budget_points: float,
                    max_float: int, every_layer: dict, limit: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Keep the highest-ranked layers float, one more at a time, until the search-set metric is
    within `budget_points` of float (or `max_float` layers are float). Every step is recorded.
    `every_layer`: the caller's check of the model with every layer quantized (the first step; it
    decided that the search is needed, and is not measured again)."""
    float_set: list[str] = []
    history = []
    candidates = list(ranking)
    while True:
        if float_set:
            switch.quantize_only(set(switch.layers) - set(float_set))
            r = search.within(switch.forward, float_metric, budget_points, limit)
        else:
            r = every_layer
        history.append(_step(float_set, r, float_metric))
        if log:
            log(f"  {len(float_set)} float layers: {'within' if r['ok'] else 'over'} budget ({r['samples']} samples read)")
        if r["ok"]:
            return {"float_layers": float_set, "history": history, "met": True}
        if not candidates or len(float_set) >= max_float:
            return {"float_layers": float_set, "history": history, "met": False}
        float_set.append(candidates.pop(0))


def prepare(task_name: str, loaded, datasets: list[Path], settings: QuantSettings, seed: int, skip_bad: bool):
    """Wrap `loaded.model` for QAT and calibrate it; returns its switch, the search set and the float
    reference outputs."""
    task = get_task(task_name)
    search = SearchSet.load(task_name, datasets, loaded.config, settings, skip_bad)
    wrap_qat(loaded.model, settings, False)
    train, _ = train_and_search(task_name, open_datasets(datasets), loaded.config, settings.search_samples, skip_bad)
    batches = task.training_batches(train, loaded.config, settings, seed)
    calibrate(loaded.model, [batches(CALIB_STEP0 + i)["image"] for i in range(settings.calib_batches)], settings.activation_ranges, seed)
    switch = GatedQuant(loaded.model, task, loaded.config)
    switch.quantize_only(set())
    ref = search.outputs(switch.forward)
    return switch, search, ref


def _extra(rows: list[dict], names: list[str]) -> dict:
    weights = {r["layer"]: r["weights"] for r in rows}
    count = sum(weights.get(n, 0) for n in names)
    return {"float_weight_count": count, "float_extra_bytes": EXTRA_BYTES_PER_WEIGHT * count}


def before_training(loaded, settings: QuantSettings, job, log: Callable[[str], None] | None = None) -> dict:
    """The float model's metric on the search set (what the search after training measures the
    drop against), and with `search_before_training` the float fallback on the calibrated model:
    layers whose quantization wrecks it are kept float, one by one in ranking order, since QAT
    cannot train through them. The target before training is looser than the budget
    (`pre_training_factor` x budget, on the first `pre_training_samples` samples): training
    recovers the rest, and the search after training enforces the budget itself."""
    t0 = time.monotonic()
    info = {"budget_points": job.options.max_drop, "pre_training_target_points": float(job.options.max_drop) * settings.pre_training_factor,
            "naive": None, "ranking": [], "float_layers": [], "history_before_training": []}
    if not settings.search_before_training:
        search = SearchSet.load(job.task, job.datasets, loaded.config, settings, job.options.skip_bad_labels)
        float_metric = search.metric(search.outputs(static_forward(loaded.model, search.task, loaded.config)))
        return {**info, "search_samples": len(search.samples), "float_metric": round(float_metric, 6),
                "seconds_before_training": round(time.monotonic() - t0, 1)}
    work = copy.copy(loaded)
    work.model = copy.deepcopy(loaded.model)
    switch, search, ref = prepare(job.task, work, job.datasets, settings, job.options.seed, job.options.skip_bad_labels)
    limit = settings.pre_training_samples or len(search.samples)
    float_metric, float_sub = search.metric(ref), search.metric(ref[:limit])
    target = info["pre_training_target_points"]
    switch.quantize_only(set(switch.layers))
    naive = search.within(switch.forward, float_sub, target, limit)
    rows: list[dict] = []
    res = {"float_layers": [], "history": [], "met": naive["ok"]}
    if not naive["ok"]:
        rows = rank_layers(switch, search, ref, settings.probe_samples)
        res = fallback_search(switch, search, [r["layer"] for r in rows], float_sub, target, settings.max_float_layers, naive, limit, log)
    return {**info, "search_samples": len(search.samples), "pre_training_samples": limit, "float_metric": round(float_metric, 6),
            "naive": naive, "ranking": rows, "float_layers": res["float_layers"], "history_before_training": res["history"],
            "seconds_before_training": round(time.monotonic() - t0, 1)}


def after_training(model, settings: QuantSettings, search_info: dict, job, log: Callable[[str], None] | None = None) -> dict:
    """Measure the trained model on the whole search set; keep more layers float (next in the
    ranking, made now if the model was not ranked before) until the drop is within the budget
    minus `search_margin` (the eval split is a different sample of the same data), at most
    `max_float_layers` in all. Every outcome has the same keys, whichever way the search went."""
    t0 = time.monotonic()
    cfg = job.source.load_config()
    search = SearchSet.load(job.task, job.datasets, cfg, settings, job.options.skip_bad_labels)
    budget = float(job.options.max_drop) - settings.search_margin
    checked = search.within(static_forward(model, search.task, cfg), search_info["float_metric"], budget)  # as exported
    first = _step([], checked, search_info["float_metric"])
    rows, res = search_info["ranking"], {"float_layers": [], "history": [first], "met": first["ok"]}
    room = settings.max_float_layers - len(search_info["float_layers"])
    if not first["ok"] and room > 0:
        switch = GatedQuant(model, search.task, cfg)
        if not rows:  # rank on the trained model: its own float computation is the reference
            switch.quantize_only(set())
            rows = rank_layers(switch, search, search.outputs(switch.forward), settings.probe_samples)
        ranking = [r["layer"] for r in rows if r["layer"] in switch.layers and r["layer"] not in search_info["float_layers"]]
        res = fallback_search(switch, search, ranking, search_info["float_metric"], budget, room, checked, None, log)
    added = res["float_layers"]
    all_float = search_info["float_layers"] + added
    final = res["history"][-1]
    # Not met: quantize still finishes (the work is kept); evaluate's --max-drop check judges the run.
    return {**search_info, "ranking": rows, "added_after_training": added, "history_after_training": res["history"],
            "met": res["met"], "float_layers": all_float, "final_metric": final["metric"],
            "final_drop_points": final["drop_points"], **_extra(rows, all_float),
            "seconds_after_training": round(time.monotonic() - t0, 1)}
