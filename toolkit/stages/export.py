"""Stage 2: export inference models (.pdmodel + .pdiparams, the form opt accepts).

The float baseline is exported from the same dygraph model QAT starts from, and the
quantized model as PaddleOCR's quant.py does it: a fresh model wrapped with QAT *without*
PACT, the trained state loaded, eval mode, the weight scales brought up to the trained weights
(refresh_weight_scales: Lite quantizes the weights with them), `save_quantized_model` in the
fake-quant format that Paddle Lite reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from toolkit.digest import fingerprint, hash_json
from toolkit.errors import ToolkitError
from toolkit.jobs import ExportJob
from toolkit.models.build import LoadedModel, build_model
from toolkit.models.sources import ModelSource
from toolkit.rundir import RunDir, atomic_dir, atomic_write_bytes, read_json
from toolkit.stages.quantize.ops import wrap_qat
from toolkit.stages.quantize.settings import QuantSettings
from toolkit.tasks import get_task


# Attributes Paddle writes for its own training and executors (oneDNN, cuDNN) that Paddle Lite never
# reads: no line of Lite v2.12's operators, passes or ARM kernels names them (use_mkldnn: only
# transpose's op param, which no ARM kernel uses; use_quantizer: pool's, which the ARM pooling
# functions take but never use). Paddle Inference fills them back in with its
# defaults, which is what they held (use_cudnn, True on convolutions, only matters on a GPU;
# use_quantizer is False everywhere, the default of both). Lite copies every attribute into the .nb
# at ~60 bytes each.
UNREAD_BY_LITE = ("with_quant_attr", "op_device", "op_role", "op_role_var", "op_namescope", "op_callstack",
                  "use_mkldnn", "mkldnn_data_type", "force_fp32_output", "use_addto", "exhaustive_search",
                  "fuse_residual_connection", "fuse_relu_before_depthwise_conv", "fuse_alpha", "fuse_beta", "fuse_activation",
                  "Scale_in", "Scale_in_eltwise", "Scale_out", "Scale_weights", "Scale_x", "Scale_y", "workspace_size_MB",
                  "use_cudnn", "use_quantizer")

# Lite reads is_test on these op types only; elsewhere it is dropped, and Paddle Inference's is_test
# pass sets it back on every op that can have it (fake-quant ops keep theirs: opt removes them).
# (data_format, read by Lite only on pad and transpose ops, stays: without it oneDNN picks other
# convolution kernels and Paddle Inference's outputs move by up to 0.03.)
LITE_READS_IS_TEST = {"batch_norm", "dropout", "lookup_table", "lookup_table_v2", "rnn"}


def _unread_attrs(op) -> list[str]:
    """The attributes of one op that Lite 2.12 does not read (see the tables above). Thresholds of an
    op's inputs (`Filter0_threshold`, per channel: 40 kB of det's int8 .nb; `X0_threshold`, ...) go
    too: opt takes weight scales from the fake-quant ops and reads only output thresholds, and of
    those only `out_threshold` where an op has it (`Out0_threshold` beside it goes)."""
    kind = op.type()
    inputs, outputs = set(op.input_names()), set(op.output_names())
    # has_attr, not attr_names(): Paddle keeps its runtime-only attributes (use_mkldnn, is_test, ...) apart
    unread = [a for a in UNREAD_BY_LITE if op.has_attr(a)]
    if op.has_attr("is_test") and kind not in LITE_READS_IS_TEST and not kind.startswith("fake_"):
        unread.append("is_test")
    for name in op.attr_names():
        arg = name[:-len("_threshold")].rstrip("0123456789") if name.endswith("_threshold") else ""
        if (arg in inputs and arg not in outputs) or (arg in outputs and op.has_attr("out_threshold")):
            unread.append(name)
    return unread


def prepare_for_lite(model_dir: Path, drop_unread: bool = True) -> int:
    """Rewrite the exported program for Paddle Lite, exactly (the same numbers come out):

    - `elementwise_add(conv, reshape2(bias))` becomes `elementwise_add(conv, bias, axis=1)`: Paddle
      2.6 exports every conv bias through a reshape2 that Lite 2.12 cannot fold, leaving two extra
      ops per conv in the .nb and blocking conv+bias fusion (int8 models then keep extra calib ops);
    - attributes Lite never reads are dropped (`_unread_attrs`; 5% + 4% of the det int8 .nb), unless
      `drop_unread` is off (the test that shows this changes nothing needs both).

    Returns how many reshapes were removed."""
    import collections

    from toolkit.engine import paddle

    paddle()
    from paddle.base import core

    path = model_dir / "inference.pdmodel"
    desc = core.ProgramDesc(path.read_bytes())
    block = desc.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    consumers = collections.defaultdict(list)
    for op in ops:
        for name in op.input_arg_names():
            consumers[name].append(op)
    folded = []
    for i, op in enumerate(ops):
        if op.type() != "reshape2":
            continue
        src, out = op.input("X")[0], op.output("Out")[0]
        var = block.find_var(src.encode())
        users = consumers[out]
        if var is None or not var.persistable() or len(var.shape()) != 1 or not users:
            continue
        if any(u.type() != "elementwise_add" or u.input("Y") != [out] for u in users):
            continue
        for u in users:
            u.set_input("Y", [src])
            u._set_int32_attr("axis", 1)
        folded.append((i, op.output_arg_names()))
    for i, outs in reversed(folded):
        block._remove_op(i, i + 1)
        for name in outs:
            block._remove_var(name.encode())
    for i in range(block.op_size() if drop_unread else 0):
        for attr in _unread_attrs(block.op(i)):
            block.op(i).remove_attr(attr)
    atomic_write_bytes(path, desc.serialize_to_string())
    return len(folded)


def save_float(loaded: LoadedModel, out_dir: Path, for_lite: bool = True) -> Path:
    """paddle.jit.save the float dygraph model into `out_dir` atomically; `for_lite=False` keeps the
    program as Paddle wrote it (Paddle's own quantization passes read the attributes Lite does not)."""
    from toolkit.engine import paddle

    pd = paddle()
    loaded.model.eval()
    static = pd.jit.to_static(loaded.model, input_spec=get_task(loaded.task).input_spec(loaded.config), full_graph=True)
    with atomic_dir(out_dir) as tmp:
        pd.jit.save(static, str(tmp / "inference"))
        if for_lite:
            prepare_for_lite(tmp)
    return out_dir


def save_quantized(source: ModelSource, qat_state: Path, settings: QuantSettings, out_dir: Path, for_lite: bool = True) -> Path:
    """Rebuild the QAT-wrapped model (PACT off), load the trained state, save the fake-quant model
    (`for_lite` as in save_float)."""
    from toolkit.engine import paddle

    pd = paddle()
    loaded = build_model(source, load_weights=False)
    quanter, _ = wrap_qat(loaded.model, settings, pact=False)
    state = pd.load(str(qat_state))
    own = loaded.model.state_dict()
    # PACT adds clip parameters the export model has not; everything else must match.
    missing = [k for k in own if k not in state]
    if missing:
        raise ToolkitError(f"{qat_state} does not fit the model ({len(missing)} tensors missing, e.g. {missing[0]})",
                           hint="re-run `toolkit quantize` for this run directory")
    loaded.model.set_state_dict({k: v for k, v in state.items() if k in own})
    loaded.model.eval()
    refresh_weight_scales(loaded.model, get_task(source.task).probe_shape(loaded.config))
    with atomic_dir(out_dir) as tmp:
        quanter.save_quantized_model(loaded.model, str(tmp / "inference"), input_spec=get_task(source.task).input_spec(loaded.config))
        if for_lite:
            prepare_for_lite(tmp)
    return out_dir


# In export's key: a run directory exported before refresh_weight_scales existed exports again.
EXPORT_REVISION = 2


def refresh_weight_scales(model, probe_shape: tuple[int, ...]) -> int:
    """Bring every weight quantizer's stored scale up to the weights it quantizes; returns how many
    channels it changed.

    A weight quantizer writes max|w| into its scale on each forward pass, so after training the
    stored scale is the one of the last step's forward, before that step's update moved the
    weights. Paddle recomputes the scale whenever it runs the model, so the host never sees it;
    Lite's opt quantizes the weights with the stored scale (quant_dequant_op_fuser), so on the
    device every channel the last step moved computes with other int8 weights than the host
    (measured: 6310 of det's 7536 channels, up to 4.9% off, one past int8's range). One forward
    pass in eval mode (activation ranges stay as trained) rewrites them; then each is checked."""
    import numpy as np

    from toolkit.engine import paddle
    from toolkit.stages.quantize.ops import quantized_layers

    pd = paddle()
    quantized = [(n, layer) for n, layer in quantized_layers(model).items() if getattr(layer._fake_quant_weight, "_scale", None) is not None]

    def stale(layers: list) -> dict[str, int]:
        out = {}
        for name, layer in layers:
            fq = layer._fake_quant_weight
            w, scale = np.abs(layer.weight.numpy()), fq._scale.numpy().ravel()
            axis = getattr(fq, "_quant_axis", None)
            want = w.max(axis=tuple(a for a in range(w.ndim) if a != axis)) if scale.size > 1 else np.array([w.max()])
            if (bad := int(np.sum(np.abs(scale - want) > 1e-6 * np.abs(want) + 1e-30))):  # denormal channels flush to 0
                out[name] = bad
        return out

    before = stale(quantized)
    ran: set[str] = set()  # layers off the inference path (rep branches) are not exported
    hooks = [layer.register_forward_post_hook(lambda *_, n=n: ran.add(n)) for n, layer in quantized]
    try:
        with pd.no_grad():
            model(pd.zeros(probe_shape, dtype="float32"))
    finally:
        for h in hooks:
            h.remove()
    if left := stale([(n, layer) for n, layer in quantized if n in ran]):
        raise ToolkitError(f"the weight scales of {len(left)} quantized layers (e.g. {next(iter(left))}) still differ from their weights "
                           "after a forward pass: Lite would quantize those weights differently from the host",
                           hint="Lite reads weight scales that are max|w| (weight_quantize_type channel_wise_abs_max or abs_max in "
                                "the config's Quant section); re-run `toolkit quantize` with one of those")
    return sum(c for n, c in before.items() if n in ran)


def export(job: ExportJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: float baseline -> float/<task>/, quantized model -> quant/<task>/model/."""
    record = run.manifest()["stages"].get(f"quantize:{job.task}")
    if not record:
        raise ToolkitError(f"{run.root}: no quantized {job.task} model to export", hint=f"run `toolkit quantize --run-dir {run.root}` first")
    method = record["result"]["method"]
    meta = run.quant_info(job.task, method)
    if not meta.exists():
        raise ToolkitError(f"{meta} is missing: the quantize record is stale", hint=f"re-run `toolkit quantize --run-dir {run.root}`")
    info = read_json(meta, f"{method}.json")
    trained = run.qat_state(job.task) if method == "qat" else run.ptq_model(job.task)
    key = hash_json({"source": job.source.fingerprint(), "inputs": fingerprint([meta, trained]), "revision": EXPORT_REVISION})
    out_float, out_quant = run.float_model(job.task), run.quant_model(job.task)

    def work():
        save_float(build_model(job.source), out_float)
        if method == "qat":
            save_quantized(job.source, trained, QuantSettings.model_validate(info["settings"]), out_quant)
        else:
            with atomic_dir(out_quant) as tmp:
                for f in ("inference.pdmodel", "inference.pdiparams"):
                    shutil.copy2(trained / f, tmp / f)
                prepare_for_lite(tmp)
        sizes = {p.name: sum(f.stat().st_size for f in p.glob("inference.*")) for p in (out_float, out_quant)}
        return {"task": job.task, "method": method, "float_dir": str(out_float), "quant_dir": str(out_quant),
                "float_bytes": sizes[out_float.name], "quant_bytes": sizes[out_quant.name]}, [out_float, out_quant]

    return run.run_stage(f"export:{job.task}", key, work, log)
