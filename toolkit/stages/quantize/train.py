"""The QAT loop: PaddleSlim dygraph QAT (as PaddleOCR's deploy/slim/quantization/quant.py does it)
from the real pretrained weights, batch norm and dropout frozen, the task's loss (which may
distil to the float model), checkpoints that make `--resume` continue at the same step with
the same batches. One loop serves one process and every rank of a data-parallel job.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from toolkit.data.datasets import open_datasets, train_and_search
from toolkit.errors import ToolkitError
from toolkit.jobs import QuantJob
from toolkit.models.build import build_model
from toolkit.rundir import RunDir, atomic_write_json, read_json
from toolkit.stages.quantize import search as fallback
from toolkit.stages.quantize.ops import calibrate, freeze_norms, set_device, wrap_qat
from toolkit.stages.quantize.settings import QuantSettings, scale_for_world, settings_for
from toolkit.tasks import get_task


def latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    best = None
    for f in ckpt_dir.glob("step_*.pdparams"):
        try:
            step = int(f.stem.split("_")[1])
        except ValueError:
            continue
        if f.with_suffix(".pdopt").exists() and (best is None or step > best[0]):
            best = (step, f)
    return best


class TrainLogFollower:
    """Progress of a QAT loop that runs in another process (ranks, a child stage), read from the
    train_log.jsonl it appends a line to after every step."""

    def __init__(self, job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None):
        self.path, self.progress = run.train_log(job.task), progress
        self.total = settings_for(job.task, job.source.load_config(), job.source.config, job.options).steps
        resumed = latest_checkpoint(run.checkpoints(job.task)) if job.options.resume else None
        self.seen = resumed[0] if resumed else 0
        # A fresh loop replaces the log; until it does, the one here is an earlier run's (or the
        # stage is up to date and no loop runs at all): no progress to show from it.
        self.stale = self._stamp() if not resumed else None

    def _stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @property
    def finished(self) -> bool:
        """Every step logged: what the process does now (the check after QAT, export) has no bar."""
        return self.seen >= self.total

    def poll(self) -> None:
        if self.progress is None or not self.path.exists() or (self.stale is not None and self._stamp() == self.stale):
            return
        self.stale = None
        for ln in [ln for ln in self.path.read_text().splitlines() if ln.strip()][self.seen:]:
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                break  # a line being written
            self.seen += 1
            self.progress(int(rec["step"]), self.total, float(rec["loss"]))


def _save_checkpoint(pd, model, opt, ckpt_dir: Path, step: int) -> None:
    """Params and optimizer state under temp names, then renamed: a kill never leaves half a file."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    base = ckpt_dir / f"step_{step:06d}"
    for suffix, obj in ((".pdopt", opt.state_dict()), (".pdparams", model.state_dict())):
        tmp = ckpt_dir / f".tmp{suffix}"
        pd.save(obj, str(tmp))
        os.replace(tmp, base.with_suffix(suffix))
    for old in sorted(ckpt_dir.glob("step_*.pdparams"))[:-2]:  # keep the last two
        old.unlink(missing_ok=True)
        old.with_suffix(".pdopt").unlink(missing_ok=True)


def _trim_log(path: Path, step: int) -> None:
    """On resume: drop log lines past the checkpoint, so the curve has each step once."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def learning_rate(settings: QuantSettings, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to a tenth."""
    lr = settings.learning_rate
    if step < settings.warmup_steps:
        return lr * (step + 1) / settings.warmup_steps
    if settings.lr_schedule == "cosine":
        t = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    return lr


def sync_observers(pd, model) -> None:
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


def search_before_training(job: QuantJob, run: RunDir) -> dict | None:
    """The pre-training float-fallback search (quant/<task>/search.json); `--resume` reuses it.
    The distributed launcher runs it once; every rank reads the file."""
    if not job.searching:
        return None
    from toolkit.engine import paddle

    path = run.search_cache(job.task)
    if job.options.resume and path.exists():
        return read_json(path, "search cache")
    pd = paddle()
    set_device(job.options.device)
    pd.seed(job.options.seed)
    loaded = build_model(job.source)
    result = fallback.before_training(loaded, settings_for(job.task, loaded.config, job.source.config, job.options), job)
    atomic_write_json(path, result)
    return result


def run_qat(job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None = None,
            rank: int = 0, world: int = 1) -> dict | None:
    """QAT for one task; writes quant/<task>/{ckpt/, train_log.jsonl, qat_final.pdparams, qat.json}.

    world > 1: one rank of a data-parallel job (paddle.distributed is set up): the model is
    wrapped in paddle.DataParallel, every rank draws the step's global batch and trains on its
    slice, and only rank 0 writes checkpoints, the log, the after-training search and the results
    (the other ranks return None)."""
    from toolkit.engine import paddle

    pd = paddle()
    lead = rank == 0
    task = get_task(job.task)
    if world == 1:
        set_device(job.options.device)
    pd.seed(job.options.seed)
    ckpt_dir, log_path = run.checkpoints(job.task), run.train_log(job.task)
    loaded = build_model(job.source)
    settings = settings_for(job.task, loaded.config, job.source.config, job.options)
    teacher = None
    if settings.distill_weight > 0:
        teacher = copy.deepcopy(loaded.model)  # the float model, to distil against
        teacher.eval()
    search = None
    if job.searching:
        if world == 1:
            search = search_before_training(job, run)
        else:
            if not run.search_cache(job.task).exists():
                raise ToolkitError(f"QAT {job.task}: rank {rank} found no {run.search_cache(job.task)}",
                                   hint="the run directory must be the same shared folder on every node")
            search = read_json(run.search_cache(job.task), "search cache")
        settings = settings.model_copy(update={"skip_layers": settings.skip_layers + search["float_layers"]})
    if world > 1:
        settings = scale_for_world(settings, job.options, world, job.task)
    train, _ = train_and_search(job.task, open_datasets(job.datasets), loaded.config, settings.search_samples, job.options.skip_bad_labels)
    samples = task.training_batches(train, loaded.config, settings, job.options.seed)
    model = loaded.model
    _, skipped = wrap_qat(model, settings, settings.pact)
    # Activation ranges from training data the schedule never draws (every rank computes the same ones).
    calibrate(model, [samples(fallback.CALIB_STEP0 + i)["image"] for i in range(settings.calib_batches)],
              settings.activation_ranges, job.options.seed)
    freeze_norms(model)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    opt = pd.optimizer.Adam(learning_rate=settings.learning_rate, parameters=trainable)
    forward = model
    if world > 1:
        # Parameters and buffers start as rank 0's; gradients are averaged over the ranks. The det
        # threshold branch is trainable but not in the inference forward: unused parameters.
        forward = pd.DataParallel(model, find_unused_parameters=True)
        per = int(settings.batch_per_rank)
    loss_fn = task.loss(loaded.config, settings, teacher)
    steps, save_every = settings.steps, settings.checkpoint_every
    start = 0
    if job.options.resume and (latest := latest_checkpoint(ckpt_dir)):
        start, f = latest  # every rank loads rank 0's checkpoint (a shared run directory)
        model.set_state_dict(pd.load(str(f)))
        opt.set_state_dict(pd.load(str(f.with_suffix(".pdopt"))))
        if lead:
            _trim_log(log_path, start)
    elif lead:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
    run.quant_dir(job.task).mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") if lead else open(os.devnull, "w") as log:
        for step in range(start, steps):
            t0 = time.monotonic()
            opt.set_lr(learning_rate(settings, step))
            drawn = samples(step)
            if world > 1:  # the single process's batch for this step, this rank's slice of it
                drawn = {k: v[rank * per:(rank + 1) * per] for k, v in drawn.items()}
            batch = {k: pd.to_tensor(v) for k, v in drawn.items()}
            loss = loss_fn(forward(batch["image"]), batch)
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
                sync_observers(pd, model)
            log.write(json.dumps({"step": step + 1, "loss": round(value, 6), "seconds": round(time.monotonic() - t0, 3)}) + "\n")
            log.flush()
            if lead and ((step + 1) % save_every == 0 or step + 1 == steps):
                _save_checkpoint(pd, model, opt, ckpt_dir, step + 1)
            if progress:
                progress(step + 1, steps, value)
    if not lead:
        return None
    if search is not None:
        search = fallback.after_training(model, settings, search, job)
        settings = settings.model_copy(update={"skip_layers": settings.skip_layers + search["added_after_training"]})
        skipped = skipped + search["added_after_training"]
    tmp = run.qat_state(job.task).with_name(".qat_final.tmp")
    pd.save(model.state_dict(), str(tmp))
    os.replace(tmp, run.qat_state(job.task))
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines() if line.strip()]
    info = {"method": "qat", "task": job.task, "steps": steps, "resumed_from": start, "settings": settings.model_dump(),
            "float_layers": skipped, "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "train_samples": samples.count, "weights": loaded.info, "search": search}
    atomic_write_json(run.quant_info(job.task, "qat"), info)
    return info
