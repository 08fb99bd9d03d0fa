"""The quantized export's weight scales: what Lite's opt quantizes the weights with.

A weight quantizer stores max|w| from its last forward pass; after QAT that is the pass before the
last optimizer step. Paddle recomputes it when it runs the model, Lite's opt does not, so a stale
stored scale changes only what the device computes (found by per-op dumps of the real runtime:
6310 of det's 7536 channels, up to 4.9% off)."""

from __future__ import annotations

import numpy as np


def _scales(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stored scale and max|w| along the quant axis, per quantized layer."""
    out = {}
    for name, layer in model.named_sublayers():
        fq = getattr(layer, "_fake_quant_weight", None)
        if getattr(fq, "_scale", None) is None:
            continue
        w = np.abs(layer.weight.numpy())
        out[name] = (fq._scale.numpy().ravel(), w.max(axis=tuple(a for a in range(w.ndim) if a != fq._quant_axis)))
    return out


def test_export_brings_the_stored_weight_scales_up_to_the_trained_weights():
    from toolkit.engine import paddle
    from toolkit.jobs import QuantOptions
    from toolkit.models.build import build_model
    from toolkit.models.sources import resolve_source
    from toolkit.stages.export import refresh_weight_scales
    from toolkit.stages.quantize.ops import wrap_qat
    from toolkit.stages.quantize.settings import settings_for
    from toolkit.tasks import get_task

    pd = paddle()
    src = resolve_source("det", None)
    loaded = build_model(src)
    wrap_qat(loaded.model, settings_for("det", loaded.config, src.config, QuantOptions()), pact=False)
    shape = get_task("det").probe_shape(loaded.config)
    loaded.model.eval()
    with pd.no_grad():
        loaded.model(pd.zeros([1, 3, 64, 64], dtype="float32"))  # what training's last forward leaves
    on_path = {n for n, (s, m) in _scales(loaded.model).items() if np.allclose(s, m, rtol=1e-6, atol=1e-30)}
    assert len(on_path) > 20
    # The last optimizer step moves the weights after that forward: 1% more in one layer's channels.
    moved = sorted(on_path)[3]
    layer = dict(loaded.model.named_sublayers())[moved]
    layer.weight.set_value(layer.weight.numpy() * 1.01)
    stale = _scales(loaded.model)[moved]
    assert not np.allclose(*stale, rtol=1e-6)

    assert refresh_weight_scales(loaded.model, shape) == stale[0].size
    for name in on_path:
        assert np.allclose(*_scales(loaded.model)[name], rtol=1e-6, atol=1e-30), name
    assert refresh_weight_scales(loaded.model, shape) == 0
