"""The accuracy search's building blocks on the real PP-OCRv4 rec model (small data)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated_rec(small_data):
    from toolkit.jobs import QuantOptions
    from toolkit.models.build import build_model
    from toolkit.models.sources import resolve_source
    from toolkit.stages.quantize.search import prepare
    from toolkit.stages.quantize.settings import settings_for

    src = resolve_source("rec", None)
    loaded = build_model(src)
    settings = settings_for("rec", loaded.config, src.config, QuantOptions()).model_copy(update={"search_samples": 10, "calib_batches": 2})
    return (loaded, *prepare("rec", loaded, [small_data], settings, 0, False))


def test_switch_sees_only_layers_the_inference_graph_calls(calibrated_rec):
    loaded, switch, _, _ = calibrated_rec
    every = [n for n, lyr in loaded.model.named_sublayers() if hasattr(lyr, "_fake_quant_weight")]
    # Re-parameterised branches and the training-only heads are never called at inference.
    assert 20 < len(switch.layers) < len(every)
    assert all(not n.endswith("._layer") for n in switch.layers)


def test_early_stopping_gives_the_same_decision_as_a_full_pass(calibrated_rec):
    """`within` may stop reading early only when the answer is already certain."""
    _, switch, search, ref = calibrated_rec
    forward = switch.forward
    search.CHUNK = 2
    float_metric = search.metric(ref)
    switch.quantize_only(set(switch.layers))
    full = search.metric(search.outputs(forward))
    for budget in (0.0, 100 * (float_metric - full) - 1e-6, 100 * (float_metric - full) + 1e-6, 100.0):
        r = search.within(forward, float_metric, budget)
        assert r["ok"] == (100 * (float_metric - full) <= budget), (budget, r, full)
        if r["metric"] is None:
            assert r["samples"] < len(search.samples) and full <= r["at_most"]


def test_gated_program_runs_each_switch_setting_exactly(calibrated_rec):
    """One Paddle Inference program serves every combination of float and fake-quantized layers:
    a setting gives its own outputs whatever ran before it (oneDNN must not keep the first run's
    convolution weights), all-off is the eager float computation, and the eager model is untouched."""
    import numpy as np

    from toolkit.stages.quantize.ops import QuantSwitch

    loaded, switch, search, _ = calibrated_rec
    forward = switch.forward
    layers = sorted(switch.layers)
    settings = {"none": set(), "all": set(layers), "one": {layers[len(layers) // 2]}}
    first = {}
    for name in ("all", "none", "one", "all", "none"):  # "none" after "all": no stale weights
        switch.quantize_only(settings[name])
        outs = search.outputs(forward, range(4))
        if name in first:
            assert all(np.array_equal(a, b) for a, b in zip(outs, first[name])), f"{name} changed after other settings ran"
        first[name] = outs
    assert max(float(np.abs(a - b).max()) for a, b in zip(first["none"], first["all"])) > 0.05
    assert max(float(np.abs(a - b).max()) for a, b in zip(first["none"], first["one"])) > 0

    from toolkit.engine import paddle

    pd = paddle()
    eager = QuantSwitch(loaded.model)  # the wrapped eager model, every layer float
    eager.quantize_only(set())
    with pd.no_grad():
        ref = search.outputs(lambda x: search.task.model_output(loaded.model(pd.to_tensor(x))).numpy(), range(4))
    eager.quantize_only(set(eager.layers))
    assert max(float(np.abs(a - b).max()) for a, b in zip(first["none"], ref)) < 5e-3
    assert not [k for k in loaded.model.state_dict() if ".quant." in k]  # no gate left in the eager model


def test_search_predictors_take_the_share_of_cores_the_process_was_started_with():
    """Importing paddle sets OMP_NUM_THREADS=1 where it was unset; the search must still use every
    core in a lone process, and keep to 1 where a parent (det and rec side by side) asked for 1."""
    import os
    import subprocess
    import sys

    code = "from toolkit.engine import paddle; paddle(); from toolkit.stages.quantize.gated import threads; print(threads())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    lone = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    child = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True)
    assert int(lone.stdout.split()[-1]) == os.cpu_count() and int(child.stdout.split()[-1]) == 1
