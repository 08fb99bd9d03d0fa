"""What differs between detection and recognition, behind one interface.

A `Task` owns its labels, input shapes, preprocessing, training batches, loss, metric,
post-processing and the runtime config the device runner reads. Everything outside
toolkit/tasks/ takes a task object and never asks which task it is: the accuracy search takes
the task's metric (as NNCF's accuracy control takes a validation callback), evaluation and the
device check call the same `infer` + `score`.

Model outputs travel as one numpy array per sample (det: the probability map of an image,
rec: the per-step character distribution of a line), in sample order; `infer` runs any
forward function (eager model, Paddle Inference predictor) over prepared batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass
class Batch:
    """Model input for some samples, and which samples (by index) it holds."""

    x: np.ndarray
    index: list[int]
    meta: list = field(default_factory=list)    # per-sample facts post-processing needs (det: resize ratios)


class Batches:
    """Deterministic training batch `step`: the same step gives the same batch, so a resumed QAT
    run sees exactly what an uninterrupted one would."""

    def __init__(self, count: int, make: Callable[[int], dict]):
        self.count = count
        self._make = make

    def __call__(self, step: int) -> dict:
        return self._make(step)


class Task:
    """Base class of the tasks; see the module docstring."""

    name: str = ""
    metric: str = ""             # the key of the judged metric in `score`'s result (a fraction)
    metric_label: str = ""       # the same for people
    counts_correct: bool = False  # the metric is the share of correct samples (lets a check stop early)

    # ---- data
    def read_labels(self, path: Path, cfg: dict, on_error: str):
        raise NotImplementedError

    def groups(self, samples: Sequence, cfg: dict, batch_size: int = 32) -> list[list[int]]:
        """Sample indices in batches whose inputs have one shape (a batch then gives exactly the
        outputs a batch of one would)."""
        raise NotImplementedError

    def batch(self, samples: Sequence, index: list[int], cfg: dict) -> Batch:
        """The model input of some samples (one group)."""
        raise NotImplementedError

    def training_batches(self, samples: Sequence, cfg: dict, settings, seed: int) -> Batches:
        raise NotImplementedError

    def calibration_inputs(self, samples: Sequence, cfg: dict, count: int, seed: int) -> list[np.ndarray]:
        """A few single-sample inputs from the train split (PTQ calibration)."""
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
        return [self.batch(samples, [int(i)], cfg).x for i in pick]

    # ---- model
    def input_spec(self, cfg: dict) -> list:
        raise NotImplementedError

    def probe_shape(self, cfg: dict) -> tuple[int, ...]:
        """A fixed input shape for the x86 `.nb` equivalence check."""
        raise NotImplementedError

    def model_output(self, out):
        """The tensor the inference model returns, from the dygraph model's output."""
        raise NotImplementedError

    def loss(self, cfg: dict, settings, teacher) -> Callable:
        raise NotImplementedError

    # ---- inference and metric
    def infer(self, forward: Forward, batches: Sequence[Batch]) -> tuple[dict[int, np.ndarray], dict[int, object]]:
        """Run `forward` over batches: the output array and meta of every sample, by index."""
        outs: dict[int, np.ndarray] = {}
        metas: dict[int, object] = {}
        for b in batches:
            y = forward(b.x)
            for j, i in enumerate(b.index):
                outs[i] = y[j]
                metas[i] = b.meta[j] if b.meta else None
        return outs, metas

    def run(self, forward: Forward, samples: Sequence, cfg: dict, batch_size: int = 32,
            progress: Callable[[int, int], None] | None = None) -> tuple[list[np.ndarray], list]:
        """Outputs and metas of every sample in order, loading one batch at a time; `progress(done, total)`
        after each batch."""
        outs: dict[int, np.ndarray] = {}
        metas: dict[int, object] = {}
        for idx in self.groups(samples, cfg, batch_size):
            o, m = self.infer(forward, [self.batch(samples, idx, cfg)])
            outs.update(o)
            metas.update(m)
            if progress:
                progress(len(outs), len(samples))
        return [outs[i] for i in range(len(samples))], [metas[i] for i in range(len(samples))]

    def score(self, outputs: list[np.ndarray], samples: Sequence, cfg: dict, metas: list | None = None) -> dict:
        """The metric dict: `metric` and the other figures, plus per-sample `predictions`."""
        raise NotImplementedError

    def correct(self, output: np.ndarray, sample, cfg: dict) -> bool:
        """Whether one sample is right (tasks with `counts_correct`)."""
        raise NotImplementedError

    def output_error(self, outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
        """How far outputs moved from a float reference (ranks layers by harm)."""
        return float(np.mean([np.abs(o - r).mean() for o, r in zip(outs, ref)]))

    def disagreements(self, samples: Sequence, float_pred: list, quant_pred: list) -> list[dict]:
        """Samples where float and quantized outputs differ, what a person looks at first:
        {"image", "label", "float", "quant" (texts to show), "order" (lower first), "boxes"? (to draw)}."""
        raise NotImplementedError

    def runtime_config(self, cfg: dict) -> dict:
        """This task's section of the bundle's config.json (what the device runner reads)."""
        raise NotImplementedError

    def device_summary(self, figures: dict) -> str:
        """One line for people: how the device's outputs compare with the host's (stages/verify.py)."""
        raise NotImplementedError

    def bundle_files(self, cfg: dict) -> dict[str, Path]:
        """Files the device runner needs besides the model: bundle path -> source file."""
        return {}

    def summary_line(self, res: dict) -> str:
        f, q = res["float"][self.metric], res["quant"][self.metric]
        return f"{self.name}: {self.metric_label} float {f:.4f}  quant {q:.4f}  drop {res['drop_points']:.2f} points"
