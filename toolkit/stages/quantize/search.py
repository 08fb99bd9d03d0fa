"""Per-layer quantization sensitivity (`toolkit analyze`) and the automatic float fallback
(`toolkit quantize --max-drop X`).

Both work on a QAT-wrapped dygraph model whose fake-quant layers can be switched off one
at a time without rebuilding it (`QuantSwitch`), and on a held-out search set of training
samples that QAT never trains on (`SearchSet`), so the eval split stays untouched until
`toolkit evaluate`.

Sensitivity of a layer = how far the network's output moves from the float output when
only that layer is quantized (mean L1 distance of the rec per-step character
distributions, mean absolute difference of the det probability map), measured on a few
calibration samples. It ranks layers in seconds each; the task metric is then measured
with the whole model quantized and the top-ranked layers float, one more at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.data import datasets as datamod
from toolkit.errors import ToolkitError
from toolkit.rundir import RunDir, atomic_write_json, stage_key

CALIB_STEP0 = 1_000_000


class QuantSwitch:
    """Turns the fake quantization of single layers of a QAT-wrapped model on and off."""

    def __init__(self, model):
        from toolkit.engine import paddle

        pd = paddle()

        class Identity(pd.nn.Layer):
            def forward(self, x):
                return x

        self._identity = Identity
        # PaddleSlim puts the quantized layer inside an output-scale wrapper at the original
        # name (NAME._layer); the original name is what skip_layers and users refer to.
        self.layers = {n.removesuffix("._layer"): lyr for n, lyr in model.named_sublayers() if hasattr(lyr, "_fake_quant_weight")}
        self._saved = {n: (lyr._fake_quant_weight, lyr._fake_quant_input) for n, lyr in self.layers.items()}

    def quantize_only(self, names) -> None:
        """Fake-quantize exactly `names`; every other quantizable layer computes in float."""
        names = set(names)
        for n, lyr in self.layers.items():
            if n in names:
                lyr._fake_quant_weight, lyr._fake_quant_input = self._saved[n]
            else:
                lyr._fake_quant_weight, lyr._fake_quant_input = self._identity(), self._identity()

    def drop_unused(self, forward: Callable[[], None]) -> None:
        """Forget layers the inference graph never calls (re-parameterised branches, training-only
        heads): they cost nothing on the device and measuring them would be wasted time."""
        used: set[str] = set()
        hooks = [lyr.register_forward_pre_hook(lambda layer, inp, n=n: used.add(n)) for n, lyr in self.layers.items()]
        try:
            forward()
        finally:
            for h in hooks:
                h.remove()
        self.layers = {n: lyr for n, lyr in self.layers.items() if n in used}

    def weight_count(self, name: str) -> int:
        w = getattr(self.layers[name], "weight", None)
        return int(np.prod(w.shape)) if w is not None else 0


@dataclass
class SearchSet:
    """Samples held out of QAT training, with the task metric computed from dygraph outputs."""

    task: str
    samples: list
    cfg: dict
    inputs: list = field(default_factory=list)   # ready model inputs (rec: one batch array; det: per image)
    CHUNK = 25                                    # rec lines per step of `within`

    @classmethod
    def load(cls, task: str, data_dir: Path, cfg: dict, settings: dict, skip_bad: bool) -> "SearchSet":
        samples = datamod.search_samples(task, data_dir, cfg, settings, skip_bad)
        if not samples:
            raise ToolkitError(f"no {task} training samples left to hold out for the float-fallback search",
                               hint="add training samples, or turn the search off with --max-drop none")
        s = cls(task, samples, cfg)
        if task == "rec":
            width = int((cfg.get("Eval") or {}).get("image_shape", [3, 48, 320])[2])
            imgs = [datamod.read_image(x.image) for x in samples]
            s.inputs = [np.stack([datamod.rec_input(im, datamod.rec_width(im, 48, width), 48, width) for im in imgs])]
        else:
            s.inputs = [datamod.det_input(datamod.read_image(x.image), cfg) for x in samples]
        return s

    def outputs(self, model, limit: int | None = None, start: int = 0) -> list[np.ndarray]:
        from toolkit.engine import paddle

        pd = paddle()
        outs = []
        with pd.no_grad():
            if self.task == "rec":
                x = self.inputs[0][start:limit]
                for b in range(0, len(x), 50):
                    o = model(pd.to_tensor(x[b:b + 50]))
                    outs.append((o["ctc"] if isinstance(o, dict) else o).numpy())
                return [np.concatenate(outs)]
            for x, _ in self.inputs[start:limit]:
                outs.append(model(pd.to_tensor(x))["maps"].numpy())
        return outs

    def within(self, model, float_metric: float, budget_points: float, limit: int | None = None) -> dict:
        """Is the model's metric on the first `limit` samples within `budget_points` of float?

        rec reads the lines in chunks and stops as soon as a miss is certain (no remaining line
        could bring it back within budget): the same decision as a full pass, at a fraction of
        the cost for hopeless configurations. det's hmean is computed in full."""
        n = min(limit or len(self.samples), len(self.samples))
        if self.task != "rec":
            m = self.metric(self.outputs(model, n))
            return {"ok": 100 * (float_metric - m) <= budget_points, "metric": m, "samples": n}
        from ppocr.metrics.rec_metric import RecMetric

        from toolkit.models.sources import ctc_decoder

        decode = ctc_decoder(self.cfg)
        rm = RecMetric(ignore_space=bool((self.cfg.get("Metric") or {}).get("ignore_space", True)))
        seen = 0
        while seen < n:
            end = min(seen + self.CHUNK, n)
            texts = [t for t, _ in decode(self.outputs(model, end, seen)[0])]
            rm([[(t, 1.0) for t in texts], [(x.text, 1.0) for x in self.samples[seen:end]]])
            seen = end
            best = (rm.correct_num + n - seen) / n
            if seen < n and 100 * (float_metric - best) > budget_points:
                return {"ok": False, "metric": None, "samples": seen, "at_most": round(best, 6)}
        return {"ok": 100 * (float_metric - rm.correct_num / n) <= budget_points, "metric": rm.correct_num / n, "samples": n}

    def metric(self, outs: list[np.ndarray]) -> float:
        """Line accuracy (rec) or hmean (det), as fractions, PaddleOCR's own metric classes."""
        if self.task == "rec":
            from ppocr.metrics.rec_metric import RecMetric

            from toolkit.models.sources import ctc_decoder

            texts = [t for t, _ in ctc_decoder(self.cfg)(outs[0])]
            m = RecMetric(ignore_space=bool((self.cfg.get("Metric") or {}).get("ignore_space", True)))
            m([[(t, 1.0) for t in texts], [(s.text, 1.0) for s in self.samples[: len(texts)]]])
            return float(m.get_metric()["acc"])
        from ppocr.metrics.det_metric import DetMetric

        from toolkit.stages.evaluate import det_postprocess

        post, metric = det_postprocess(self.cfg), DetMetric()
        for prob, (_, shape), s in zip(outs, self.inputs, self.samples):
            found = post({"maps": prob}, shape)[0]["points"]
            metric([{"points": found}], [None, None, [[np.asarray(p) for p in s.polys]], [list(s.ignore)]])
        return float(metric.get_metric()["hmean"])

    def head(self, outs: list[np.ndarray], n: int) -> list[np.ndarray]:
        """The outputs of the first `n` samples (rec: one batch array; det: one array per image)."""
        return [outs[0][:n]] if self.task == "rec" else outs[:n]

    @staticmethod
    def error(outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
        """Mean distance of outputs from the float reference (rec: L1 between per-step distributions)."""
        if len(outs) == 1 and outs[0].ndim == 3:
            return float(np.abs(outs[0] - ref[0]).sum(-1).mean())
        return float(np.mean([np.abs(o - r).mean() for o, r in zip(outs, ref)]))


def calibrate(model, batches: list[np.ndarray]) -> None:
    """Let the activation observers see real data (no weight update), then switch to eval."""
    from toolkit.engine import paddle
    from toolkit.stages.quantize.stage import _freeze_norms

    pd = paddle()
    _freeze_norms(model)
    with pd.no_grad():
        for x in batches:
            model(pd.to_tensor(x))
    model.eval()


def rank_layers(model, switch: QuantSwitch, search: SearchSet, float_ref: list[np.ndarray], probe: int,
                progress: Callable[[int, int, float], None] | None = None) -> list[dict]:
    """Quantize one layer at a time; rank by how far the output moves from float (largest first)."""
    ref = search.head(float_ref, probe)
    rows = []
    names = list(switch.layers)
    for i, name in enumerate(names):
        switch.quantize_only({name})
        err = SearchSet.error(search.outputs(model, probe), ref)
        rows.append({"layer": name, "error": round(err, 6), "weights": switch.weight_count(name)})
        if progress:
            progress(i + 1, len(names), None)
    rows.sort(key=lambda r: -r["error"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def fallback_search(model, switch: QuantSwitch, search: SearchSet, ranking: list[str], float_metric: float,
                    budget_points: float, max_float: int, limit: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Keep the highest-ranked layers float, one more at a time, until the search-set metric is
    within `budget_points` of float. Returns the float set and every step's outcome."""
    float_set: list[str] = []
    history = []
    candidates = list(ranking)
    while True:
        switch.quantize_only(set(switch.layers) - set(float_set))
        r = search.within(model, float_metric, budget_points, limit)
        history.append({"float_layers": len(float_set), "added": float_set[-1] if float_set else None, **r,
                        "drop_points": None if r["metric"] is None else round(100 * (float_metric - r["metric"]), 3)})
        if log:
            log(f"  {len(float_set)} float layers: {'within' if r['ok'] else 'over'} budget ({r['samples']} samples read)")
        if r["ok"]:
            return {"float_layers": float_set, "history": history, "met": True}
        if not candidates or len(float_set) >= max_float:
            return {"float_layers": float_set, "history": history, "met": False}
        float_set.append(candidates.pop(0))


@dataclass
class AnalyzeJob:
    task: str
    source: object                      # ModelSource
    data_dir: Path
    calib_batches: int = 8
    probe: int | None = None            # samples used per layer (None: the config's Quant.probe_samples)
    skip_bad_labels: bool = False


def prepare(task: str, source, data_dir: Path, settings: dict, seed: int, skip_bad: bool, load=None):
    """A QAT-wrapped, calibrated model with its switch, the search set and the float reference."""
    from toolkit.models.sources import build_model
    from toolkit.stages.quantize.stage import wrap_qat

    loaded = load or build_model(source)
    search = SearchSet.load(task, data_dir, loaded.config, settings, skip_bad)
    wrap_qat(loaded.model, settings, False)
    switch = QuantSwitch(loaded.model)
    batches = datamod.training_batches(task, data_dir, loaded.config, settings, seed, skip_bad)
    # Batches past the training schedule: the same data QAT sees, not the same draws.
    calibrate(loaded.model, [batches(CALIB_STEP0 + i)["image"] for i in range(int(settings.get("calib_batches", 8)))])
    switch.drop_unused(lambda: search.outputs(loaded.model, 1))
    switch.quantize_only(set())
    ref = search.outputs(loaded.model)
    return loaded, switch, search, ref


def analyze(job: AnalyzeJob, run: RunDir, progress=None, log=None) -> dict:
    """Entry point of `toolkit analyze`: analyze/<task>/sensitivity.json, the ranked layers."""
    from toolkit.models.sources import load_config
    from toolkit.stages.quantize.stage import QuantJob

    cfg = load_config(job.source.config, job.source.overrides)
    settings = QuantJob(task=job.task, source=job.source, data_dir=job.data_dir).settings(cfg)
    settings["calib_batches"] = job.calib_batches
    probe = int(job.probe or settings.get("probe_samples", 16))
    key = stage_key(task=job.task, source=job.source.fingerprint(), data=datamod.fingerprint(job.task, job.data_dir),
                    settings=settings, probe=probe)
    out = run.root / "analyze" / job.task / "sensitivity.json"

    def work():
        t0 = time.monotonic()
        loaded, switch, search, ref = prepare(job.task, job.source, job.data_dir, settings, 0, job.skip_bad_labels)
        float_metric = search.metric(ref)
        switch.quantize_only(set(switch.layers))
        full = search.metric(search.outputs(loaded.model))
        limit = int(settings.get("pre_training_samples") or len(search.samples))
        float_sub = search.metric(search.head(ref, limit))
        t1 = time.monotonic()
        rows = rank_layers(loaded.model, switch, search, ref, probe, progress)
        t2 = time.monotonic()
        ranking = [r["layer"] for r in rows]
        # The metric with the top-k layers float shows how quickly the ranking recovers accuracy.
        curve = []
        for k in (1, 2, 4, 8, 16):
            if k > len(ranking):
                break
            switch.quantize_only(set(switch.layers) - set(ranking[:k]))
            m = search.metric(search.outputs(loaded.model, limit))
            curve.append({"float_layers": k, "samples": limit, "metric": round(m, 6), "drop_points": round(100 * (float_sub - m), 3)})
        result = {"task": job.task, "layers": len(rows), "search_samples": len(search.samples), "probe_samples": probe,
                  "float_metric": round(float_metric, 6), "full_quant_metric": round(full, 6),
                  "full_quant_drop_points": round(100 * (float_metric - full), 3), "top_k_curve": curve, "ranking": rows,
                  "seconds": {"prepare": round(t1 - t0, 1), "per_layer": round((t2 - t1) / max(len(rows), 1), 2), "total": round(time.monotonic() - t0, 1)}}
        atomic_write_json(out, result)
        return {k: v for k, v in result.items() if k != "ranking"} | {"top": rows[:10]}, [out]

    return run.run_stage(f"analyze:{job.task}", key, work, log)


# --- the automatic float fallback inside `toolkit quantize` ---

def before_training(loaded, settings: dict, job, log: Callable[[str], None] | None = None) -> dict:
    """Keep float, one by one in sensitivity order, the layers that break the calibrated, fully
    quantized model: QAT cannot train through a layer whose quantization wrecks the output
    (PP-OCRv4 rec). The target before training is looser than the budget
    (`pre_training_factor` x budget, on the first `pre_training_samples` samples): training
    recovers the rest, and the search after training enforces the budget itself. Layers are
    only ranked when the fully quantized model misses that target."""
    import copy

    from toolkit.models.sources import LoadedModel

    t0 = time.monotonic()
    work = LoadedModel(**{**loaded.__dict__, "model": copy.deepcopy(loaded.model)})
    model, switch, search, ref = prepare(job.task, job.source, job.data_dir, settings, job.seed, job.skip_bad_labels, load=work)
    limit = int(settings.get("pre_training_samples") or len(search.samples))
    float_metric, float_sub = search.metric(ref), search.metric(search.head(ref, limit))
    target = float(job.max_drop) * float(settings.get("pre_training_factor", 3.0))
    switch.quantize_only(set(switch.layers))
    naive = search.within(model.model, float_sub, target, limit)
    rows: list[dict] = []
    res = {"float_layers": [], "history": [], "met": naive["ok"]}
    if not naive["ok"]:
        rows = rank_layers(model.model, switch, search, ref, int(settings.get("probe_samples", 8)))
        res = fallback_search(model.model, switch, search, [r["layer"] for r in rows], float_sub, target,
                              int(settings.get("max_float_layers", 32)), limit, log)
    return {"budget_points": job.max_drop, "search_samples": len(search.samples), "pre_training_samples": limit,
            "float_metric": round(float_metric, 6), "naive": naive, "pre_training_target_points": target,
            "ranking": rows, "float_layers": res["float_layers"], "history_before_training": res["history"],
            "seconds_before_training": round(time.monotonic() - t0, 1)}


def after_training(model, settings: dict, search_info: dict, job, log: Callable[[str], None] | None = None) -> dict:
    """Measure the trained model on the whole search set; keep more layers float (next in the
    ranking, made now if the model was not ranked before) until the drop is within the budget
    minus `search_margin` (the eval split is a different sample of the same data)."""
    from toolkit.models.sources import load_config

    t0 = time.monotonic()
    cfg = load_config(job.source.config, job.source.overrides)
    search = SearchSet.load(job.task, data_dir=job.data_dir, cfg=cfg, settings=settings, skip_bad=job.skip_bad_labels)
    model.eval()
    switch = QuantSwitch(model)
    switch.drop_unused(lambda: search.outputs(model, 1))
    budget = float(job.max_drop) - float(settings.get("search_margin", 0.25))
    switch.quantize_only(set(switch.layers))
    first = search.within(model, search_info["float_metric"], budget)
    rows, res = search_info["ranking"], {"float_layers": [], "history": [first], "met": first["ok"]}
    if not first["ok"]:
        if not rows:  # rank on the trained model: its own float computation is the reference
            switch.quantize_only(set())
            rows = rank_layers(model, switch, search, search.outputs(model), int(settings.get("probe_samples", 8)))
        ranking = [r["layer"] for r in rows if r["layer"] in switch.layers]
        res = fallback_search(model, switch, search, ranking, search_info["float_metric"], budget,
                              int(settings.get("max_float_layers", 32)) - len(search_info["float_layers"]), None, log)
    switch.quantize_only(set(switch.layers))  # as exported: the layers found here go into skip_layers
    added = res["float_layers"]
    weights = {r["layer"]: r["weights"] for r in rows}
    all_float = search_info["float_layers"] + added
    final = res["history"][-1]
    return {**search_info, "ranking": rows, "added_after_training": added, "history_after_training": res["history"],
            "met": res["met"], "float_layers": all_float,
            "final_metric": final["metric"], "final_drop_points": None if final["metric"] is None else round(100 * (search_info["float_metric"] - final["metric"]), 3),
            "float_weight_count": sum(weights.get(n, 0) for n in all_float),
            # int8 stores 1 byte per weight, float 4: what keeping these layers float adds to the .nb
            "float_extra_bytes": 3 * sum(weights.get(n, 0) for n in all_float),
            "seconds_after_training": round(time.monotonic() - t0, 1)}
    # Not met: quantize still finishes (the work is kept); evaluate's --max-drop check fails the run.
