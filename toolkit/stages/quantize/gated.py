"""The search's forward passes on Paddle Inference (oneDNN), not the eager model: the float
model, and a QAT-wrapped model whose layers' fake quantization is switched per run.

Switching layers one at a time (the ranking) or a few at a time (the float fallback) would need a
program per combination, and each new predictor pays oneDNN's first-run cost again (seconds per
input shape). Instead the QAT-wrapped model is exported once with a gate on every fake quantizer,
`y = s * quant(x) + (1 - s) * x`, whose `s` is one slot of a second model input: 1 and 0 give the
fake-quantized and the float value exactly, so one predictor runs every combination.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.stages.quantize.ops import quantized_layers

SWITCHES = "toolkit_switches"
# The op types of this project's models that Paddle Inference's is_test_pass marks besides those that
# declare the attribute (paddle/fluid/framework/ir/is_test_pass.cc); oneDNN's transposed conv requires it.
IS_TEST_OPS = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "pool2d", "relu", "sigmoid", "hard_sigmoid",
               "hard_swish", "swish", "leaky_relu", "relu6", "tanh", "sqrt", "abs", "exp", "pow", "gelu", "softmax")


def threads() -> int:
    """This process's share of the cores for the search's predictors: the OMP_NUM_THREADS it was
    started with (a parent sets it for det and rec side by side), else every core."""
    from toolkit.engine import threads_asked

    return threads_asked() or os.cpu_count() or 1


def _saved_predictor(layer, input_spec: list, computed_weights: bool = False):
    """paddle.jit.save `layer` to a scratch folder and load it into a Paddle Inference predictor.
    `computed_weights`: some convolutions' filters are computed by the program (the gates), and
    oneDNN must not cache them from the first run as it does for an inference program's weights:
    those convolutions run with is_test off, every other op with is_test on as Paddle would set it."""
    from toolkit.engine import paddle
    from toolkit.stages.evaluate import predictor

    pd = paddle()
    with tempfile.TemporaryDirectory(prefix="toolkit-search-") as tmp:
        static = pd.jit.to_static(layer, input_spec=input_spec, full_graph=True)
        pd.jit.save(static, str(Path(tmp) / "inference"))
        if computed_weights:
            _is_test_except_computed_filters(Path(tmp) / "inference.pdmodel")
        return predictor(Path(tmp), threads=threads(), keep_is_test=computed_weights)


def _is_test_except_computed_filters(path: Path) -> None:
    from paddle.base import core

    desc = core.ProgramDesc(path.read_bytes())
    block = desc.block(0)
    for i in range(block.op_size()):
        op = block.op(i)
        filt = op.input("Filter") if "Filter" in op.input_names() else []
        if filt and not block.find_var(filt[0].encode()).persistable():
            op._set_bool_attr("is_test", False)
        elif op.has_attr("is_test") or op.type() in IS_TEST_OPS:
            op._set_bool_attr("is_test", True)
    path.write_bytes(desc.serialize_to_string())


def _output_layer(model, task, state: dict | None = None):
    """`model` returning the task's output array; with `state`, a second input (the gates'
    switches) is handed to the gates through it. (to_static's code transform does not see
    closures, hence attributes.)"""
    from toolkit.engine import paddle

    class Output(paddle().nn.Layer):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.output = task.model_output
            self.state = state

        def forward(self, x, switches=None):
            if switches is not None:
                self.state["switches"] = switches
            return self.output(self.inner(x))

    return Output()


def static_forward(model, task, cfg: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The model as Paddle Inference runs it, as `evaluate` measures exported models: the float
    model, or a QAT-wrapped one with every layer fake-quantized (as it will be exported)."""
    from toolkit.stages.evaluate import infer

    model.eval()
    pred = _saved_predictor(_output_layer(model, task), task.input_spec(cfg))
    return lambda x: infer(pred, x)


class GatedQuant:
    """A QAT-wrapped model on Paddle Inference whose layers are fake-quantized or float by choice:
    `quantize_only(names)`, then `forward`; the interface of ops.QuantSwitch plus a forward, for
    the ranking and the fallback checks. Layers the inference graph never calls (re-parameterised
    branches, training-only heads) are not in `layers`. The eager model is left as it was."""

    def __init__(self, model, task, cfg: dict):
        from toolkit.engine import paddle

        pd = paddle()
        all_layers = quantized_layers(model)
        names = list(all_layers)
        state: dict = {"switches": None, "used": set()}

        class Gate(pd.nn.Layer):
            def __init__(self, quant, slot):
                super().__init__()
                self.quant = quant
                self.slot = slot
                self.state = state

            def forward(self, x):
                self.state["used"].add(self.slot)  # runs while the program is traced
                s = self.state["switches"][self.slot:self.slot + 1]
                return self.quant(x) * s + x * (1.0 - s)

        saved = {n: (lyr._fake_quant_weight, lyr._fake_quant_input) for n, lyr in all_layers.items()}
        model.eval()
        try:
            for slot, n in enumerate(names):
                w, a = saved[n]
                all_layers[n]._fake_quant_weight, all_layers[n]._fake_quant_input = Gate(w, 2 * slot), Gate(a, 2 * slot + 1)
            spec = task.input_spec(cfg) + [pd.static.InputSpec([2 * len(names)], "float32", name=SWITCHES)]
            self._pred = _saved_predictor(_output_layer(model, task, state), spec, computed_weights=True)
        finally:  # the eager model goes on as it was (its state_dict keys included)
            for n, (w, a) in saved.items():
                all_layers[n]._fake_quant_weight, all_layers[n]._fake_quant_input = w, a
        used = {s // 2 for s in state["used"]}
        self._slots = {n: i for i, n in enumerate(names)}
        self.layers = {n: all_layers[n] for i, n in enumerate(names) if i in used}
        self._switches = np.ones(2 * len(names), dtype="float32")

    def quantize_only(self, names) -> None:
        """Fake-quantize exactly `names` (weights and inputs); every other layer computes in float."""
        names = set(names)
        for n, i in self._slots.items():
            self._switches[2 * i:2 * i + 2] = 1.0 if n in names else 0.0

    def weight_count(self, name: str) -> int:
        w = getattr(self.layers[name], "weight", None)
        return int(np.prod(w.shape)) if w is not None else 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        from toolkit.stages.evaluate import infer

        return infer(self._pred, x, self._switches)
