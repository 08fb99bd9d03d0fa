"""Stage 1: quantization, QAT (PaddleSlim dygraph, as PaddleOCR's deploy/slim/quantization
quant.py does it) or PTQ (calibration only, `quant_post_static`).

QAT starts from the real pretrained weights, keeps batch norm and dropout frozen (the
shipped models are re-parameterised; a few steps must not move their statistics), and
trains only what the inference model contains: the DB probability map for det (with
distillation to the float model, since the threshold branch is not in the shipped
weights) and the CTC branch for rec. Checkpoints every N steps make `--resume` continue
an interrupted run at the same step with the same batches.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


from toolkit.data import datasets as datamod
from toolkit.stages.quantize import search as fallback
from toolkit.errors import ToolkitError
from toolkit.models.sources import ModelSource, build_model, skip_quant_layers
from toolkit.rundir import RunDir, atomic_write_json, stage_key


@dataclass
class QuantJob:
    task: str
    source: ModelSource
    data_dir: Path
    method: str = "qat"                 # qat | ptq
    steps: int | None = None            # None: the config's Quant.steps
    batch_size: int | None = None
    learning_rate: float | None = None
    skip_layers: list[str] = field(default_factory=list)  # added to the config's Quant.skip_layers
    pact: bool | None = None
    save_every: int | None = None
    resume: bool = False
    seed: int = 0
    device: str = "cpu"                 # cpu | gpu
    skip_bad_labels: bool = False
    max_drop: float | None = 1.0        # points; None: quantize every layer not in skip_layers (no search)
    # Data-parallel QAT through paddle.distributed.launch (toolkit/distributed.py); None: one process.
    # Keys: devices ("0,1" GPU ids) or nproc (CPU processes), nodes (list of hosts), master ("host:port").
    dist: dict | None = None

    def settings(self, cfg: dict) -> dict:
        """The effective quantization settings: config's Quant section overridden by flags."""
        q = dict(cfg.get("Quant") or {})
        for k in ("steps", "batch_size", "pact", "save_every"):
            if getattr(self, k) is not None:
                q[k] = getattr(self, k)
        q["learning_rate"] = self.learning_rate or cfg["Optimizer"]["lr"]["learning_rate"]
        q["skip_layers"] = list(q.get("skip_layers") or []) + list(self.skip_layers)
        return q


def qat_config(settings: dict, pact: bool) -> dict:
    """PaddleSlim QAT config; fake-quant format (onnx_format False) is what Paddle Lite reads."""
    return {
        "weight_preprocess_type": None,
        "activation_preprocess_type": "PACT" if pact else None,
        "weight_quantize_type": settings.get("weight_quantize_type", "channel_wise_abs_max"),
        "activation_quantize_type": settings.get("activation_quantize_type", "moving_average_abs_max"),
        "weight_bits": settings.get("weight_bits", 8),
        "activation_bits": settings.get("activation_bits", 8),
        "dtype": "int8",
        "window_size": 10000,
        "moving_rate": 0.9,
        "quantizable_layer_type": list(settings.get("quantizable_layer_type", ["Conv2D", "Linear"])),
        "onnx_format": False,
    }


def wrap_qat(model, settings: dict, pact: bool) -> list[str]:
    """Mark skipped layers, insert fake-quant layers in place; returns the layers kept float."""
    from paddleslim.dygraph.quant import QAT

    skipped = skip_quant_layers(model, settings["skip_layers"])
    QAT(config=qat_config(settings, pact)).quantize(model)
    return skipped


def _set_device(device: str):
    from toolkit.engine import paddle

    pd = paddle()
    if device == "gpu":
        if not pd.device.is_compiled_with_cuda() or pd.device.cuda.device_count() == 0:
            raise ToolkitError("--device gpu: no CUDA GPU is visible to paddle", hint="use --device cpu, or the GPU trainer image")
        pd.set_device("gpu")
    else:
        pd.set_device("cpu")


def _freeze_norms(model) -> None:
    """Training mode for the fake-quant observers, eval mode for batch norm and dropout."""
    from toolkit.engine import paddle

    pd = paddle()
    model.train()
    for layer in model.sublayers():
        if isinstance(layer, (pd.nn.BatchNorm, pd.nn.BatchNorm2D, pd.nn.BatchNorm1D, pd.nn.Dropout, pd.nn.LayerNorm)) or type(layer).__name__ in ("BatchNorm", "Dropout", "DropPath"):
            layer.eval()
    # Heads return only what inference uses when their own flag is off (not recursive).
    head = getattr(model, "head", None)
    if head is not None:
        head.training = False


def _loss_fn(task: str, cfg: dict, teacher) -> Callable:
    """det: balanced BCE + dice on the shrink map + distillation; rec: CTC on the CTC head."""
    from toolkit.engine import paddle

    pd = paddle()
    F = pd.nn.functional
    if task == "det":
        w = float((cfg.get("Loss") or {}).get("distill_weight", 1.0))
        wl = float((cfg.get("Loss") or {}).get("label_weight", 1.0))

        def det_loss(out, batch):
            prob = out["maps"][:, 0]
            gt, mask = batch["shrink"], batch["mask"]
            bce = F.binary_cross_entropy(prob.clip(1e-6, 1 - 1e-6), gt, reduction="none")
            pos = gt * mask
            neg = (1 - gt) * mask
            n_pos = pos.sum()
            n_neg = pd.minimum(neg.sum(), n_pos * 3 + 1)
            neg_loss = (bce * neg).flatten()
            k = int(n_neg.item())
            neg_top = pd.topk(neg_loss, k=max(k, 1))[0].sum() if k > 0 else pd.zeros([])
            balanced = ((bce * pos).sum() + neg_top) / (n_pos + n_neg + 1e-6)
            inter = (prob * gt * mask).sum()
            dice = 1 - 2 * inter / ((prob * mask).sum() + (gt * mask).sum() + 1e-6)
            with pd.no_grad():
                t = teacher(batch["image"])["maps"][:, 0]
            distill = F.mse_loss(prob, t) * 10
            return wl * (balanced + dice) + w * distill

        return det_loss

    w = float((cfg.get("Loss") or {}).get("distill_weight", 0.0))

    def rec_loss(out, batch):
        logits = out if not isinstance(out, dict) else out["ctc"]
        n, t = logits.shape[0], logits.shape[1]
        lengths = pd.full([n], t, dtype="int64")
        ctc = F.ctc_loss(logits.transpose([1, 0, 2]), batch["label"], lengths, batch["length"], blank=0, reduction="mean")
        if not w:
            return ctc
        with pd.no_grad():
            target = teacher(batch["image"])  # eval-mode CTC head: per-step probabilities
        kl = F.kl_div(F.log_softmax(logits, axis=-1), target, reduction="sum") / (n * t)
        return ctc + w * kl

    return rec_loss


def _latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    best = None
    for f in ckpt_dir.glob("step_*.pdparams"):
        try:
            step = int(f.stem.split("_")[1])
        except ValueError:
            continue
        if f.with_suffix(".pdopt").exists() and (best is None or step > best[0]):
            best = (step, f)
    return best


def _save_checkpoint(pd, model, opt, ckpt_dir: Path, step: int) -> None:
    """Write params and optimizer state under temp names, then rename: a kill never leaves half a file."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    base = ckpt_dir / f"step_{step:06d}"
    for suffix, obj in ((".pdopt", opt.state_dict()), (".pdparams", model.state_dict())):
        tmp = ckpt_dir / f".tmp{suffix}"
        pd.save(obj, str(tmp))
        os.replace(tmp, base.with_suffix(suffix))
    for old in sorted(ckpt_dir.glob("step_*.pdparams"))[:-2]:  # keep the last two
        old.unlink(missing_ok=True)
        old.with_suffix(".pdopt").unlink(missing_ok=True)


def scale_for_world(job: QuantJob, cfg: dict, settings: dict, world: int) -> dict:
    """Data-parallel settings: the global batch (--batch-size, else the config's Quant.batch_size per
    rank) is split evenly over the ranks; the config's learning rate scales linearly with the global
    batch relative to the config's Quant.batch_size (an explicit --lr is used as given)."""
    base_bs = int((cfg.get("Quant") or {}).get("batch_size", 4))
    global_bs = int(job.batch_size) if job.batch_size is not None else base_bs * world
    if global_bs % world:
        raise ToolkitError(f"QAT {job.task}: global batch {global_bs} does not split evenly over {world} ranks",
                           hint=f"pass --batch-size as a multiple of {world}")
    out = dict(settings)
    out["batch_size"] = global_bs
    out["batch_per_rank"] = global_bs // world
    out["world_size"] = world
    if job.learning_rate is None:
        out["lr_scale"] = global_bs / base_bs
        out["learning_rate"] = float(cfg["Optimizer"]["lr"]["learning_rate"]) * global_bs / base_bs
    return out


def search_before_training(job: QuantJob, run: RunDir) -> dict | None:
    """The pre-training float-fallback search alone (quant/<task>/search.json), as run_qat does it;
    the distributed launcher runs it once, and every rank reads the file."""
    if job.max_drop is None:
        return None
    from toolkit.engine import paddle

    pd = paddle()
    _set_device(job.device)
    pd.seed(job.seed)
    loaded = build_model(job.source)
    settings = job.settings(loaded.config)
    return _search_cached(job, run.quant_dir(job.task), lambda: fallback.before_training(loaded, settings, job))


def _search_cached(job: QuantJob, qdir: Path, compute: Callable[[], dict]) -> dict:
    """The pre-training search result; `--resume` reuses it instead of measuring again."""
    path = qdir / "search.json"
    if job.resume and path.exists():
        return json.loads(path.read_text())
    result = compute()
    atomic_write_json(path, result)
    return result


def _sync_observers(pd, model) -> None:
    """Data-parallel: the moving-average abs-max observers saw only this rank's slice. Their state
    is accum' = rate * accum + max|x| (the same `state` on every rank), so the element-wise max over
    the ranks of accum and scale is what one process would hold after the whole batch."""
    named = list(model.named_parameters()) + list(model.named_buffers())  # PaddleSlim makes them parameters
    bufs = [b for name, b in named if name.endswith(("._accum", "._scale")) and b is not None]
    if not bufs:
        return
    flat = pd.concat([b.detach().flatten().astype("float32") for b in bufs])
    pd.distributed.all_reduce(flat, op=pd.distributed.ReduceOp.MAX)
    at = 0
    for b in bufs:
        n = int(b.size)
        b.set_value(flat[at:at + n].reshape(b.shape).astype(b.dtype))
        at += n


def run_qat(job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None = None,
            rank: int = 0, world: int = 1) -> dict | None:
    """QAT for one task; writes quant/<task>/{ckpt/, train_log.jsonl, qat_final.pdparams, qat.json}.

    world > 1: one rank of a data-parallel job (toolkit/distributed.py; paddle.distributed is set
    up): the model is wrapped in paddle.DataParallel, every rank draws the step's global batch and
    trains on its slice, the pre-training search is read from search.json (the launcher ran it),
    and only rank 0 writes checkpoints, the log, the after-training search and the results (the
    other ranks return None). world == 1 is the single-process loop, unchanged."""
    from toolkit.engine import paddle

    pd = paddle()
    lead = rank == 0
    if world == 1:
        _set_device(job.device)
    pd.seed(job.seed)
    qdir = run.quant_dir(job.task)
    ckpt_dir = qdir / "ckpt"
    loaded = build_model(job.source)
    settings = job.settings(loaded.config)
    teacher = None
    if float((loaded.config.get("Loss") or {}).get("distill_weight", 0.0)) > 0:
        teacher = copy.deepcopy(loaded.model)  # the float model, to distil against
        teacher.eval()
    search = None
    if job.max_drop is not None:
        if world == 1:
            search = _search_cached(job, qdir, lambda: fallback.before_training(loaded, settings, job))
        else:
            if not (qdir / "search.json").exists():
                raise ToolkitError(f"QAT {job.task}: rank {rank} found no {qdir / 'search.json'}",
                                   hint="the run directory must be the same shared folder on every node")
            search = json.loads((qdir / "search.json").read_text())
        settings["skip_layers"] = settings["skip_layers"] + search["float_layers"]
    if world > 1:
        settings = scale_for_world(job, loaded.config, settings, world)
    samples = datamod.training_batches(job.task, job.data_dir, loaded.config, settings, job.seed, job.skip_bad_labels)
    model = loaded.model
    skipped = wrap_qat(model, settings, bool(settings.get("pact")))
    _freeze_norms(model)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    opt = pd.optimizer.Adam(learning_rate=settings["learning_rate"], parameters=trainable)
    forward = model
    if world > 1:
        # Parameters and buffers start as rank 0's; gradients are averaged over the ranks. The det
        # threshold branch is trainable but not in the inference forward: unused parameters.
        forward = pd.DataParallel(model, find_unused_parameters=True)
        per = int(settings["batch_per_rank"])
    loss_fn = _loss_fn(job.task, loaded.config, teacher)
    steps, save_every = int(settings["steps"]), int(settings.get("save_every") or settings["steps"])
    start = 0
    log_path = qdir / "train_log.jsonl"
    if job.resume and (latest := _latest_checkpoint(ckpt_dir)):
        start, f = latest  # every rank loads rank 0's checkpoint (a shared run directory)
        model.set_state_dict(pd.load(str(f)))
        opt.set_state_dict(pd.load(str(f.with_suffix(".pdopt"))))
    elif lead:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
    qdir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") if lead else open(os.devnull, "w") as log:
        for step in range(start, steps):
            t0 = time.monotonic()
            drawn = samples(step)
            if world > 1:  # the single process's batch for this step, this rank's slice of it
                drawn = {k: v[rank * per:(rank + 1) * per] for k, v in drawn.items()}
            batch = {k: pd.to_tensor(v) for k, v in drawn.items()}
            out = forward(batch["image"])
            loss = loss_fn(out, batch)
            value = float(loss)
            if world > 1:  # the logged loss: the mean over the ranks (every rank sees the same value)
                mean = loss.detach().clone()
                pd.distributed.all_reduce(mean)
                value = float(mean) / world
            if not math.isfinite(value):
                raise ToolkitError(f"QAT {job.task}: loss became {value} at step {step + 1}",
                                   hint="lower --lr, or keep more layers in float with --skip-layer")
            loss.backward()
            opt.step()
            opt.clear_grad()
            if world > 1:
                _sync_observers(pd, model)
            secs = time.monotonic() - t0
            log.write(json.dumps({"step": step + 1, "loss": round(value, 6), "seconds": round(secs, 3)}) + "\n")
            log.flush()
            if lead and ((step + 1) % save_every == 0 or step + 1 == steps):
                _save_checkpoint(pd, model, opt, ckpt_dir, step + 1)
            if progress:
                progress(step + 1, steps, value)
    if not lead:
        return None
    if search is not None:
        search = fallback.after_training(model, settings, search, job)
        settings["skip_layers"] = settings["skip_layers"] + search["added_after_training"]
        skipped = skipped + search["added_after_training"]
    final = qdir / "qat_final.pdparams"
    tmp = qdir / ".qat_final.tmp"
    pd.save(model.state_dict(), str(tmp))
    os.replace(tmp, final)
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines() if line.strip()]
    info = {"method": "qat", "task": job.task, "steps": steps, "resumed_from": start, "settings": settings,
            "float_layers": skipped, "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "train_samples": samples.count, "weights": loaded.info, "search": search}
    atomic_write_json(qdir / "qat.json", info)
    return info


def run_ptq(job: QuantJob, run: RunDir) -> dict:
    """Post-training quantization of the float export with PaddleSlim's quant_post_static."""
    from toolkit.stages import export as exportmod
    from toolkit.engine import paddle

    pd = paddle()
    from paddleslim.quant import quant_post_static

    qdir = run.quant_dir(job.task)
    loaded = build_model(job.source)
    settings = job.settings(loaded.config)
    skipped = skip_quant_layers(loaded.model, settings["skip_layers"])
    skip_tensors = [lyr.weight.name for name, lyr in loaded.model.named_sublayers()
                    if name in skipped and getattr(lyr, "weight", None) is not None]
    float_in = qdir / "ptq_float"
    exportmod.save_float(loaded, float_in)
    calib = datamod.calibration_batches(job.task, job.data_dir, loaded.config, job.seed, job.skip_bad_labels)

    class Feeds(pd.io.DataLoader):
        """PaddleSlim 2.6 insists on a DataLoader instance; this one just replays ready batches."""

        def __init__(self):  # noqa: D401 - no parent init: nothing to load
            pass

        def __call__(self):
            return ({"x": b} for b in calib)

        def __len__(self):
            return len(calib)
    pd.enable_static()
    try:
        exe = pd.static.Executor(pd.CPUPlace())
        out_dir = qdir / "ptq"
        shutil.rmtree(out_dir, ignore_errors=True)
        quant_post_static(
            executor=exe, model_dir=str(float_in), quantize_model_path=str(out_dir),
            data_loader=Feeds(), model_filename="inference.pdmodel",
            params_filename="inference.pdiparams", batch_nums=len(calib), algo="avg",
            quantizable_op_type=["conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2"],
            weight_quantize_type="channel_wise_abs_max", onnx_format=False, skip_tensor_list=skip_tensors or None,
            save_model_filename="inference.pdmodel", save_params_filename="inference.pdiparams",
        )
    finally:
        pd.disable_static()
    info = {"method": "ptq", "task": job.task, "calibration_batches": len(calib), "settings": settings, "float_layers": skipped}
    atomic_write_json(qdir / "ptq.json", info)
    return info


def quantize(job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: quantize `job.task`, skipped when the same job already ran in `run`."""
    if job.method not in ("qat", "ptq"):
        raise ToolkitError(f"unknown quantization method '{job.method}'", hint="use --method qat or --method ptq")
    data_fp = datamod.fingerprint(job.task, job.data_dir)
    fields = {k: v for k, v in asdict(job).items() if k not in ("resume", "source", "data_dir", "skip_bad_labels", "dist")}
    if job.dist and job.method == "qat":  # the rank count changes the result; hosts and ports do not
        from toolkit.stages.quantize.distributed import world_size

        fields["world_size"] = world_size(job.dist)
    key = stage_key(job=fields, source=job.source.fingerprint(), data=data_fp)
    qdir = run.quant_dir(job.task)
    outputs = [qdir / ("qat_final.pdparams" if job.method == "qat" else "ptq")]

    def work():
        if job.method == "qat" and job.dist:
            from toolkit.stages.quantize.distributed import launch

            return launch(job, run, progress, log), outputs
        info = run_qat(job, run, progress) if job.method == "qat" else run_ptq(job, run)
        return info, outputs

    return run.run_stage(f"quantize:{job.task}", key, work, log)
