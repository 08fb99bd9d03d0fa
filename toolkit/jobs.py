"""Every job as a pydantic model: the one encoding of what a stage is asked to do.

The CLI builds these from flags (the options of `toolkit quantize` and `toolkit run` are
generated from `QuantOptions`, see toolkit/cli/options.py), containers and distributed ranks
read them from job.json (`Job.model_dump_json` / `model_validate_json`) and write result.json,
so a value means the same thing everywhere it travels. Validation errors are user errors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolkit.models.sources import ModelSource
from toolkit.targets import Target

TaskName = Literal["det", "rec"]
TASKS: tuple[str, ...] = ("det", "rec")


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distributed(Job):
    """Data-parallel QAT through paddle.distributed.launch (toolkit/stages/quantize/distributed.py)."""

    devices: Optional[str] = None       # GPU ids "0,1,2,3"
    nproc: int = Field(1, ge=1)          # CPU processes per node (gloo)
    nodes: list[str] = Field(default_factory=list)
    master: Optional[str] = None         # host:port of the launcher's master, with nodes

    @property
    def per_node(self) -> int:
        return len([d for d in self.devices.split(",") if d.strip()]) if self.devices else self.nproc

    @property
    def world_size(self) -> int:
        return self.per_node * max(1, len(self.nodes))


class QuantOptions(Job):
    """How to quantize: the flags `toolkit quantize` and `toolkit run` share. None: the config's value."""

    method: Literal["qat", "ptq"] = Field("qat", description="qat (quantization-aware training) or ptq (calibration only, fast).")
    steps: Optional[int] = Field(None, ge=1, description="QAT steps (default: the config's Quant.steps).")
    batch_size: Optional[int] = Field(None, ge=1, description="Global batch size (default: the config's Quant.batch_size x ranks).")
    lr: Optional[float] = Field(None, gt=0, description="Learning rate (default: the config's Optimizer.lr.learning_rate).")
    skip_layer: list[str] = Field(default_factory=list, description="TASK:PATTERN of layers kept float (fnmatch on layer names); repeat.")
    pact: Optional[bool] = Field(None, description="PACT activation clipping during QAT (default: the config's Quant.pact).")
    resume: bool = Field(False, description="Continue an interrupted QAT from its last checkpoint.")
    device: Literal["cpu", "gpu"] = Field("cpu", description="cpu or gpu (a CUDA GPU paddle can see).")
    seed: int = Field(0, ge=0, description="Seed of batches and initialisation.")
    search: bool = Field(True, description="Keep the layers that harm accuracy most per byte float until the drop is within --max-drop "
                                           "(QAT; measured on held-out training samples). --no-search quantizes every layer not skipped by hand.")
    max_drop: float = Field(1.0, ge=0, le=100, description="Allowed accuracy drop in points (det hmean, rec exact-line accuracy) "
                                                         "on the judged eval set (the real pages when there are any).")
    skip_bad_labels: bool = Field(False, description="Skip (and count) unusable label lines and images instead of stopping.")
    nproc: Optional[str] = Field(None, description="QAT data-parallel in N CPU processes (gloo), or auto: one per free core "
                                                   "when that measured faster (default: the config's Quant.nproc).")
    devices: Optional[str] = Field(None, description="QAT data-parallel on these GPUs, e.g. 0,1,2,3 (paddle.distributed.launch).")
    nodes: Optional[str] = Field(None, description="host1,host2,...: multi-node QAT; run the same command on every node.")
    master: Optional[str] = Field(None, description="HOST:PORT of the launcher's master (with --nodes), the same on every node.")

    @field_validator("skip_layer")
    @classmethod
    def _task_pattern(cls, v: list[str]) -> list[str]:
        for item in v:
            task, sep, pattern = item.partition(":")
            if not sep or task not in TASKS or not pattern:
                raise ValueError(f"{item!r}: expected TASK:PATTERN, e.g. 'rec:*.se.*'")
        return v

    @field_validator("nproc")
    @classmethod
    def _nproc(cls, v: str | None) -> str | None:
        if v is not None and v != "auto" and not (v.isdigit() and int(v) >= 1):
            raise ValueError(f"{v!r}: expected a whole number >= 1 or auto")
        return v

    @field_validator("devices")
    @classmethod
    def _gpu_ids(cls, v: str | None) -> str | None:
        if v is not None:
            ids = [d.strip() for d in v.split(",") if d.strip()]
            if not ids or not all(d.isdigit() for d in ids):
                raise ValueError(f"{v!r}: expected GPU ids like 0,1,2,3")
            return ",".join(ids)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "QuantOptions":
        if self.devices is not None:
            self.device = "gpu"  # --devices names GPUs
        if self.devices is not None and self.nproc not in (None, "1"):
            raise ValueError("--devices and --nproc both given: --devices 0,1,... for GPUs, --nproc N for CPU processes")
        if (self.nodes is None) != (self.master is None):
            raise ValueError("--nodes and --master go together, e.g. --nodes host1,host2 --master host1:6170 (the same on every node)")
        if self.master is not None and ":" not in self.master:
            raise ValueError(f"--master {self.master}: expected HOST:PORT")
        return self

    def skip_patterns(self, task: str) -> list[str]:
        return [item.split(":", 1)[1] for item in self.skip_layer if item.split(":", 1)[0] == task]

    def distributed(self, cpus: int | None = None, default_nproc: str = "1") -> Distributed | None:
        """The data-parallel plan these flags (else the config's Quant.nproc) ask for; None: one
        process. `auto` takes one rank per core (at least 2 to be worth a launch)."""
        n = self.nproc or default_nproc
        if n == "auto":
            n = str(cpus or 1) if (cpus or 1) >= 2 and self.devices is None and self.device == "cpu" else None
        if self.devices is None and n in (None, "1") and self.nodes is None:
            return None
        return Distributed(devices=self.devices, nproc=int(n or 1), nodes=[h.strip() for h in (self.nodes or "").split(",") if h.strip()],
                           master=self.master)


class QuantJob(Job):
    task: TaskName
    source: ModelSource
    datasets: list[Path]
    options: QuantOptions = Field(default_factory=QuantOptions)
    dist: Optional[Distributed] = None

    @property
    def searching(self) -> bool:
        """The automatic float fallback runs for QAT with --search."""
        return self.options.search and self.options.method == "qat"


class ExportJob(Job):
    task: TaskName
    source: ModelSource


class ConvertJob(Job):
    targets: list[Target]
    sources: dict[str, ModelSource]
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    x86_check: bool = True


class EvalJob(Job):
    sources: dict[str, ModelSource]
    datasets: list[Path]
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    max_drop: float = Field(1.0, ge=0, le=100)
    threads: int = Field(0, ge=0)        # 0: all cores
    skip_bad_labels: bool = False
    limit: Optional[int] = Field(None, ge=1)


class AnalyzeJob(Job):
    task: TaskName
    source: ModelSource
    datasets: list[Path]
    calib_batches: int = Field(8, ge=1)
    probe: Optional[int] = Field(None, ge=1)
    skip_bad_labels: bool = False


class BundleJob(Job):
    targets: list[Target]
    sources: dict[str, ModelSource]
    datasets: list[Path] = Field(default_factory=list)
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    command: list[str] = Field(default_factory=lambda: list(sys.argv))


class SshOptions(Job):
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_new_host_keys: bool = False


class VerifyOptions(Job):
    """How much to check on the device and the tolerances. Under qemu-user arithmetic is 30-500x
    slower than on a device (an int8 det page ~7 s, a rec line ~3.6 s): size the counts."""

    det_images: int = Field(20, ge=0)
    rec_lines: int = Field(100, ge=0)
    pipeline_images: int = Field(5, ge=0)
    det_cosine_min: float = Field(0.995, ge=0, le=1)
    rec_identical_min: float = Field(0.98, ge=0, le=1)
    # Whole pages are reported; set this to also fail on them. Their lines are cropped from the
    # device's own boxes, so a 1-pixel box shift can flip a fragile decision (a space) that the
    # rec check, on identical crops, does not see.
    pipeline_identical_min: Optional[float] = Field(None, ge=0, le=1)

    @classmethod
    def from_flags(cls, samples: str, det_cosine: float, rec_identical: float) -> "VerifyOptions":
        """--verify-samples DET_IMAGES,REC_LINES,PAGES and the two tolerances."""
        from toolkit.errors import ToolkitError

        parts = samples.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ToolkitError(f"--verify-samples {samples}: expected DET_IMAGES,REC_LINES,PAGES, e.g. 20,100,5")
        det, rec, pages = (int(p) for p in parts)
        return cls(det_images=det, rec_lines=rec, pipeline_images=pages, det_cosine_min=det_cosine, rec_identical_min=rec_identical)


class VerifyJob(VerifyOptions):
    """On-device verification of an installed bundle (toolkit/stages/verify.py)."""

    target: Target
    sources: dict[str, ModelSource]
    datasets: list[Path]
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    threads: Optional[int] = Field(None, ge=1)          # default: the target's
    host_threads: int = Field(0, ge=0)                  # Paddle Inference on the host; 0: all cores
    timeout_s: float = Field(3600, gt=0)                # per runner batch on the device


class DeployJob(Job):
    target: Target
    device: str
    smoke: bool = False
    benchmark: bool = False
    warmup: int = Field(2, ge=0)
    repeats: int = Field(10, ge=1)
    ssh: SshOptions = Field(default_factory=SshOptions)
    verify: Optional[VerifyOptions] = None   # after installing, compare the device with the host (stages/verify.py)


class RunJob(Job):
    """`toolkit run`: every stage for one or more targets."""

    targets: list[Target]
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    sources: dict[str, ModelSource]
    datasets: list[Path] = Field(default_factory=list)   # empty: the main job's synthetic + real pages in RUN/data
    quant: QuantOptions = Field(default_factory=QuantOptions)
    runner: Literal["local", "docker", "auto"] = "local"
    command: list[str] = Field(default_factory=lambda: list(sys.argv))

    def quant_job(self, task: str, datasets: list[Path]) -> QuantJob:
        return QuantJob(task=task, source=self.sources[task], datasets=datasets, options=self.quant)


STAGE_JOBS: dict[str, type[Job]] = {"quantize": QuantJob, "export": ExportJob, "convert": ConvertJob, "evaluate": EvalJob}
