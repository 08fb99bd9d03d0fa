"""The quantization operations the QAT loop, PTQ, the search and export share: PaddleSlim's QAT
config (in the fake-quant format Paddle Lite reads), wrapping a model, keeping layers float,
freezing normalisation, calibrating activation ranges."""

from __future__ import annotations

import fnmatch

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.stages.quantize.settings import QuantSettings


def qat_config(settings: QuantSettings, pact: bool) -> dict:
    """PaddleSlim QAT config; fake-quant format (onnx_format False) is what Paddle Lite reads."""
    return {
        "weight_preprocess_type": None,
        "activation_preprocess_type": "PACT" if pact else None,
        "weight_quantize_type": settings.weight_quantize_type,
        "activation_quantize_type": settings.activation_quantize_type,
        "weight_bits": settings.weight_bits,
        "activation_bits": settings.activation_bits,
        "dtype": "int8",
        "window_size": 10000,
        "moving_rate": 0.9,
        "quantizable_layer_type": list(settings.quantizable_layer_type),
        "onnx_format": False,
    }


def skip_quant_layers(model, patterns: list[str]) -> list[str]:
    """Mark the sublayers whose names match `patterns` (fnmatch) to stay float; returns the names
    of those that have weights (the ones quantization would otherwise touch)."""
    names = []
    for name, layer in model.named_sublayers():
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            layer.skip_quant = True
            if getattr(layer, "weight", None) is not None:
                names.append(name)
    return names


def wrap_qat(model, settings: QuantSettings, pact: bool):
    """Mark skipped layers, insert fake-quant layers in place; returns (PaddleSlim QAT object, layers kept float)."""
    from paddleslim.dygraph.quant import QAT

    skipped = skip_quant_layers(model, settings.skip_layers)
    quanter = QAT(config=qat_config(settings, pact))
    quanter.quantize(model)
    return quanter, skipped


def set_device(device: str) -> None:
    from toolkit.engine import paddle

    pd = paddle()
    if device == "gpu":
        if not pd.device.is_compiled_with_cuda() or pd.device.cuda.device_count() == 0:
            raise ToolkitError("--device gpu: no CUDA GPU is visible to paddle", hint="use --device cpu, or the GPU trainer image")
        pd.set_device("gpu")
    else:
        pd.set_device("cpu")


def freeze_norms(model) -> None:
    """Training mode for the fake-quant observers, eval mode for batch norm and dropout: the shipped
    models are re-parameterised and a few steps must not move their statistics. The network's
    top-level parts take their inference branch (not recursive): in training mode rec's backbone
    squeezes every line to 40 steps and the heads return training-only outputs, so QAT would
    train a different computation from the one that is exported."""
    from toolkit.engine import paddle

    pd = paddle()
    model.train()
    for layer in model.sublayers():
        if isinstance(layer, (pd.nn.BatchNorm, pd.nn.BatchNorm2D, pd.nn.BatchNorm1D, pd.nn.Dropout, pd.nn.LayerNorm)) or type(layer).__name__ in ("BatchNorm", "Dropout", "DropPath"):
            layer.eval()
        if getattr(layer, "toolkit_fixed_range", False):  # a calibrated activation range: used, not updated
            layer.eval()
    for name in ("backbone", "head"):
        part = getattr(model, name, None)
        if part is not None:
            part.training = False


def quantized_layers(model) -> dict:
    """The layers QAT wrapped (they hold `_fake_quant_weight` and `_fake_quant_input`), by the
    original layer name (PaddleSlim puts each inside an output-scale wrapper at NAME._layer)."""
    return {n.removesuffix("._layer"): lyr for n, lyr in model.named_sublayers() if hasattr(lyr, "_fake_quant_weight")}


def mse_threshold(values: np.ndarray, bits: int = 8) -> float:
    """The clipping threshold T that minimises the squared error of symmetric `bits`-bit
    quantization of these magnitudes: an abs-max range spends most levels on rare outliers."""
    top = float(values.max()) if values.size else 0.0
    if top <= 0:
        return 1e-8
    levels = 2 ** (bits - 1) - 1
    best, best_err = top, None
    for t in top * np.linspace(0.01, 1.0, 100):
        q = np.round(np.minimum(values, t) / t * levels) * t / levels
        err = float(np.mean((values - q) ** 2))
        if best_err is None or err < best_err:
            best, best_err = float(t), err
    return best


def calibrate(model, inputs: list[np.ndarray], ranges: str = "moving_average", seed: int = 0) -> None:
    """Set the activation ranges from real data (no weight update), then switch to eval.

    ranges "moving_average": PaddleSlim's observers (a moving average of each batch's abs max,
    updated again during training), which watch activations already distorted by every
    quantizer upstream. "mse": the float network's inputs to each quantized layer are collected
    with quantization off, each range is set to the MSE-optimal clip of those magnitudes and stays
    fixed in training and export. On PP-OCRv4 rec, activation ranges decide the int8 accuracy:
    weights alone quantized cost about 1 point of line accuracy, activations alone tens."""
    from toolkit.engine import paddle

    pd = paddle()
    freeze_norms(model)
    if ranges != "mse":
        with pd.no_grad():
            for x in inputs:
                model(pd.to_tensor(x))
        model.eval()
        return
    layers = quantized_layers(model)
    switch = QuantSwitch(model)
    switch.quantize_only(set())  # float forward: what each layer sees without upstream quantization error
    rng = np.random.default_rng(seed)
    seen: dict[str, list] = {n: [] for n in layers}
    hooks = []
    for name, lyr in layers.items():
        def grab(layer, inp, name=name):
            v = np.abs(inp[0].numpy()).reshape(-1)
            seen[name].append(np.append(v[rng.integers(0, v.size, size=min(v.size, 50_000))], v.max()))  # a sample and the max
        hooks.append(lyr.register_forward_pre_hook(grab))
    try:
        with pd.no_grad():
            for x in inputs:
                model(pd.to_tensor(x))
    finally:
        for h in hooks:
            h.remove()
        switch.quantize_only(set(switch.layers) | set(layers))
    for name, lyr in layers.items():
        q = lyr._fake_quant_input
        if seen[name] and hasattr(q, "_scale"):  # layers the forward never calls (training-only heads) keep theirs
            q._scale.set_value(np.array([mse_threshold(np.concatenate(seen[name]))], dtype="float32"))
            q.toolkit_fixed_range = True
    model.eval()


class QuantSwitch:
    """Turns the fake quantization of single layers of a QAT-wrapped eager model on and off (the
    MSE calibration's float pass; the search switches layers in a program, quantize/gated.py)."""

    def __init__(self, model):
        from toolkit.engine import paddle

        pd = paddle()

        class Identity(pd.nn.Layer):
            def forward(self, x):
                return x

        self._identity = Identity
        # PaddleSlim puts the quantized layer inside an output-scale wrapper at the original
        # name (NAME._layer); the original name is what skip_layers and users refer to.
        self.layers = quantized_layers(model)
        self._saved = {n: (lyr._fake_quant_weight, lyr._fake_quant_input) for n, lyr in self.layers.items()}

    def quantize_only(self, names) -> None:
        """Fake-quantize exactly `names`; every other quantizable layer computes in float."""
        names = set(names)
        for n, lyr in self.layers.items():
            if n in names:
                lyr._fake_quant_weight, lyr._fake_quant_input = self._saved[n]
            else:
                lyr._fake_quant_weight, lyr._fake_quant_input = self._identity(), self._identity()
