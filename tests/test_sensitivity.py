"""The accuracy search's building blocks on the real PP-OCRv4 rec model (small data)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated_rec(small_data):
    from toolkit.models.sources import resolve_source
    from toolkit.stages.quantize.stage import QuantJob
    from toolkit.stages.quantize import search as sensitivity
    from toolkit.models.sources import load_config

    src = resolve_source("rec", None)
    settings = QuantJob(task="rec", source=src, data_dir=small_data).settings(load_config(src.config))
    settings.update(search_samples=10, calib_batches=2)
    return sensitivity.prepare("rec", src, small_data, settings, 0, False)


def test_switch_sees_only_layers_the_inference_graph_calls(calibrated_rec):
    loaded, switch, _, _ = calibrated_rec
    every = [n for n, lyr in loaded.model.named_sublayers() if hasattr(lyr, "_fake_quant_weight")]
    # Re-parameterised branches and the training-only heads are never called at inference.
    assert 20 < len(switch.layers) < len(every)
    assert all(not n.endswith("._layer") for n in switch.layers)


def test_early_stopping_gives_the_same_decision_as_a_full_pass(calibrated_rec):
    """`within` may stop reading early only when the answer is already certain."""
    loaded, switch, search, ref = calibrated_rec
    search.CHUNK = 2
    float_metric = search.metric(ref)
    switch.quantize_only(set(switch.layers))
    full = search.metric(search.outputs(loaded.model))
    for budget in (0.0, 100 * (float_metric - full) - 1e-6, 100 * (float_metric - full) + 1e-6, 100.0):
        r = search.within(loaded.model, float_metric, budget)
        assert r["ok"] == (100 * (float_metric - full) <= budget), (budget, r, full)
        if r["metric"] is None:
            assert r["samples"] < len(search.samples) and full <= r["at_most"]
