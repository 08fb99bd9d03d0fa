"""Post-training quantization: PaddleSlim's quant_post_static on the float export, calibrated on
a few training samples. The fast first look; QAT is the default."""

from __future__ import annotations

import contextlib

import numpy as np

from toolkit.data.datasets import open_datasets, train_and_search
from toolkit.jobs import QuantJob
from toolkit.models.build import build_model
from toolkit.rundir import RunDir, atomic_dir, atomic_write_json
from toolkit.stages.quantize.ops import skip_quant_layers
from toolkit.stages.quantize.settings import settings_for
from toolkit.tasks import get_task

CALIBRATION_SAMPLES = 16


@contextlib.contextmanager
def _scalar_activations_as_vectors():
    """Paddle 2.6's PTQ samples the outputs of every observer op and reshapes each to
    (batch, -1); a 0-d activation (rec's `shape[..]` slices) crashes that. Seen as a 1-element
    vector it gets a harmless scale; no int8 kernel consumes it."""
    from paddle.static.quantization import post_training_quantization as ptq_mod

    utils = ptq_mod.utils
    load = utils.load_variable_data
    utils.load_variable_data = lambda scope, name: np.atleast_1d(load(scope, name))
    try:
        yield
    finally:
        utils.load_variable_data = load


def run_ptq(job: QuantJob, run: RunDir) -> dict:
    """Quantize the float export with quant_post_static (avg), write quant/<task>/ptq/ and ptq.json."""
    from toolkit.engine import paddle
    from toolkit.stages.export import save_float

    pd = paddle()
    from paddleslim.quant import quant_post_static

    task = get_task(job.task)
    loaded = build_model(job.source)
    settings = settings_for(job.task, loaded.config, job.source.config, job.options)
    skipped = skip_quant_layers(loaded.model, settings.skip_layers)
    skip_tensors = [lyr.weight.name for name, lyr in loaded.model.named_sublayers()
                    if name in skipped and getattr(lyr, "weight", None) is not None]
    float_in = run.ptq_float_input(job.task)
    save_float(loaded, float_in, for_lite=False)  # export prepares the PTQ result for Lite
    train, _ = train_and_search(job.task, open_datasets(job.datasets), loaded.config, 0, job.options.skip_bad_labels)
    calib = task.calibration_inputs(train, loaded.config, CALIBRATION_SAMPLES, job.options.seed)

    class Feeds(pd.io.DataLoader):
        """PaddleSlim 2.6 insists on a DataLoader instance; this one just replays ready batches."""

        def __init__(self):  # noqa: D401 - no parent init: nothing to load
            pass

        def __call__(self):
            return ({"x": b} for b in calib)

        def __len__(self):
            return len(calib)

    out_dir = run.ptq_model(job.task)
    pd.enable_static()
    try:
        exe = pd.static.Executor(pd.CPUPlace())
        with _scalar_activations_as_vectors(), atomic_dir(out_dir) as tmp:  # a full disk never leaves half a model
            quant_post_static(
                executor=exe, model_dir=str(float_in), quantize_model_path=str(tmp),
                data_loader=Feeds(), model_filename="inference.pdmodel",
                params_filename="inference.pdiparams", batch_nums=len(calib), algo="avg",
                quantizable_op_type=["conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2"],
                weight_quantize_type=settings.weight_quantize_type, onnx_format=False, skip_tensor_list=skip_tensors or None,
                save_model_filename="inference.pdmodel", save_params_filename="inference.pdiparams",
            )
    finally:
        pd.disable_static()
    info = {"method": "ptq", "task": job.task, "calibration_batches": len(calib), "settings": settings.model_dump(), "float_layers": skipped}
    atomic_write_json(run.quant_info(job.task, "ptq"), info)
    return info
