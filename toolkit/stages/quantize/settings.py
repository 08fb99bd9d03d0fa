"""The effective quantization settings, typed: the config's `Quant` section (plus the loss weights
of `Loss` and the learning rate of `Optimizer`), overridden by the command's flags.

A misspelt key or a value of the wrong type (`-O Quant.steps=abc`) is a clear error naming the
config file and the key, not a crash deep inside training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.errors import ToolkitError
from toolkit.jobs import QuantOptions


class QuantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    activation_quantize_type: Literal["moving_average_abs_max", "range_abs_max", "abs_max"] = "moving_average_abs_max"
    weight_bits: int = Field(8, ge=2, le=16)
    activation_bits: int = Field(8, ge=2, le=16)
    quantizable_layer_type: list[Literal["Conv2D", "Linear"]] = Field(default_factory=lambda: ["Conv2D", "Linear"])
    skip_layers: list[str] = Field(default_factory=list)   # fnmatch patterns of sublayer names kept float
    pact: bool = False
    activation_ranges: Literal["mse", "moving_average"] = "mse"   # see ops.calibrate
    # training
    steps: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    crop_size: int = Field(320, ge=32)                        # det: square training crops
    save_every: Optional[int] = Field(None, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    label_weight: float = Field(1.0, ge=0)                    # Loss.label_weight: the task's own loss on the labels
    distill_weight: float = Field(0.0, ge=0)                  # Loss.distill_weight: distillation to the float model
    nproc: Union[int, Literal["auto"]] = 1                    # CPU data-parallel ranks when the command gives none
    # the automatic float fallback
    search_samples: int = Field(200, ge=0)
    probe_samples: int = Field(8, ge=1)
    pre_training_samples: Optional[int] = Field(None, ge=1)
    calib_batches: int = Field(8, ge=1)
    max_float_layers: int = Field(3, ge=0)
    search_before_training: bool = False   # keep layers that wreck the calibrated model float before QAT
    pre_training_factor: float = Field(3.0, gt=0)
    search_margin: float = Field(0.25, ge=0)
    # data-parallel (filled in by scale_for_world)
    world_size: int = Field(1, ge=1)
    batch_per_rank: Optional[int] = None
    lr_scale: float = 1.0
    config_batch_size: Optional[int] = None                   # the config's batch size, before --batch-size

    @property
    def checkpoint_every(self) -> int:
        return self.save_every or self.steps


def settings_for(task: str, cfg: dict, config_path: Path, options: QuantOptions) -> QuantSettings:
    """The config's settings with the flags applied on top."""
    quant = cfg.get("Quant") or {}
    loss = cfg.get("Loss") or {}
    if not isinstance(quant, dict) or not isinstance(loss, dict):
        raise ToolkitError(f"{config_path}: the Quant and Loss sections must be mappings of key: value")
    lr = ((cfg.get("Optimizer") or {}).get("lr") or {}).get("learning_rate")
    values = {**quant, **({"learning_rate": lr} if lr is not None else {})}
    for key in ("label_weight", "distill_weight"):
        if key in loss:
            values[key] = loss[key]
    try:
        base = QuantSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        section = "Loss" if key in ("label_weight", "distill_weight") else "Optimizer.lr" if key == "learning_rate" else "Quant"
        got = f" (got {err.get('input')!r})" if err["type"] != "extra_forbidden" else ""
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].lower()
        raise ToolkitError(f"{config_path}: {section}.{key}: {msg}{got}",
                           hint="fix the config file or the -O/--det-override/--rec-override value; "
                                "allowed Quant keys: " + ", ".join(QuantSettings.model_fields)) from None
    flags = {"steps": options.steps, "batch_size": options.batch_size, "pact": options.pact, "learning_rate": options.lr}
    update = {k: v for k, v in flags.items() if v is not None}
    update["skip_layers"] = base.skip_layers + options.skip_patterns(task)
    update["config_batch_size"] = base.batch_size
    return base.model_copy(update=update)


def scale_for_world(settings: QuantSettings, options: QuantOptions, world: int, task: str) -> QuantSettings:
    """Data-parallel: the global batch (--batch-size, else the config's batch size per rank) is split
    evenly over the ranks; the config's learning rate scales linearly with the global batch (an
    explicit --lr is used as given)."""
    base_bs = settings.config_batch_size or settings.batch_size
    global_bs = options.batch_size if options.batch_size is not None else base_bs * world
    if global_bs % world:
        raise ToolkitError(f"QAT {task}: global batch {global_bs} does not split evenly over {world} ranks",
                           hint=f"pass --batch-size as a multiple of {world}")
    update: dict = {"batch_size": global_bs, "batch_per_rank": global_bs // world, "world_size": world}
    if options.lr is None:
        update["lr_scale"] = global_bs / base_bs
        update["learning_rate"] = settings.learning_rate * global_bs / base_bs
    return settings.model_copy(update=update)
