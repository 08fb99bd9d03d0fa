"""A trainable dygraph model from a model source: ppocr's architecture, re-parameterised like the
shipped inference models, with the source's weights mapped on (shapes checked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.models.config import architecture, load_config
from toolkit.models.sources import ModelSource
from toolkit.tasks import get_task


def _program_param_order(program) -> list[str]:
    """Persistable inputs in the order ops first use them: the same on both sides of a re-export."""
    block = program.global_block()
    seen: dict[str, None] = {}
    for op in block.ops:
        for name in op.input_arg_names:
            var = block._find_var_recursive(name)
            if var is not None and var.persistable and name not in seen and name not in ("feed", "fetch"):
                seen[name] = None
    return list(seen)


def _read_inference_params(inference_dir: Path):
    """(name, array) of an inference model's parameters, in first-use order."""
    import numpy as np

    from toolkit.engine import paddle

    pd = paddle()
    pd.enable_static()
    try:
        scope = pd.static.Scope()
        with pd.static.scope_guard(scope):
            exe = pd.static.Executor(pd.CPUPlace())
            try:
                program, _, _ = pd.static.load_inference_model(str(inference_dir / "inference"), exe)
            except Exception as exc:  # corrupt or truncated files: paddle raises many kinds
                raise ToolkitError(f"cannot load the inference model in {inference_dir}: {str(exc).strip().splitlines()[-1][:200]}",
                                   hint="the .pdmodel/.pdiparams pair is damaged or from another model; re-export it") from None
            return [(n, np.array(scope.find_var(n).get_tensor())) for n in _program_param_order(program)]
    finally:
        pd.disable_static()


def _swap_swish(model) -> None:
    """Replace nn.Swish sublayers with x*sigmoid(x), which every Paddle Lite version converts."""
    from toolkit.engine import paddle
    from toolkit.models.layers import MulSigmoid

    pd = paddle()
    for layer in [model, *model.sublayers()]:
        for name, child in list(layer._sub_layers.items()):
            if isinstance(child, pd.nn.Swish):
                layer._sub_layers[name] = MulSigmoid()


def fold_affine_blocks(model) -> int:
    """Fold PP-LCNetV3's learnable affine blocks (y = s * x + b, s and b scalars) into the
    convolutions next to them, exactly: after a re-parameterised conv into its weights and bias,
    and after the activation that feeds a 1x1 conv without padding into that conv's weights and
    bias. Every folded block is two ops fewer in the exported model, the .nb and on the device,
    and one less activation to quantize. Returns how many blocks were folded."""
    from toolkit.engine import paddle

    pd = paddle()
    folded = 0
    with pd.no_grad():
        for layer in model.sublayers():  # after the conv: conv_{w,c}(x) * s + b = conv_{s w, s c + b}(x)
            conv, lab = getattr(layer, "reparam_conv", None), getattr(layer, "lab", None)
            if conv is not None and getattr(layer, "is_repped", False) and type(lab).__name__ == "LearnableAffineBlock":
                conv.weight.set_value(conv.weight * lab.scale)
                conv.bias.set_value(conv.bias * lab.scale + lab.bias)
                layer.lab = pd.nn.Identity()
                folded += 1
        for block in model.sublayers():  # into the next 1x1 conv: conv_{w,c}(s h + b) = conv_{s w, c + b sum(w)}(h)
            dw, pw = getattr(block, "dw_conv", None), getattr(block, "pw_conv", None)
            if dw is None or pw is None or getattr(block, "use_se", True) or dw.stride == 2 or pw.kernel_size != 1:
                continue
            lab, conv = dw.act.lab, getattr(pw, "reparam_conv", None)
            if conv is None or type(lab).__name__ != "LearnableAffineBlock":
                continue
            conv.bias.set_value(conv.bias + lab.bias * conv.weight.sum(axis=[1, 2, 3]))
            conv.weight.set_value(conv.weight * lab.scale)
            dw.act.lab = pd.nn.Identity()
            folded += 1
    return folded


@dataclass
class LoadedModel:
    """A trainable dygraph model and the config it was built from."""

    task: str
    model: Any
    config: dict
    config_path: Path
    source: ModelSource
    info: dict = field(default_factory=dict)


def build_model(source: ModelSource, load_weights: bool = True) -> LoadedModel:
    """Build the dygraph model for `source`, re-parameterised like the inference model, with weights."""
    from toolkit.engine import paddle

    paddle()
    from ppocr.modeling.architectures import build_model as ppocr_build

    cfg = load_config(source.config, source.overrides)
    model = ppocr_build(architecture(cfg))
    info: dict = {}
    if load_weights and source.checkpoint is not None:
        info = _load_checkpoint(model, source.checkpoint)  # training checkpoints predate rep()
    for layer in model.sublayers():
        if hasattr(layer, "rep"):
            layer.rep()
    _swap_swish(model)
    model.eval()
    if load_weights and source.inference_dir is not None:
        info = _load_from_inference(model, source)
    info["folded_affine_blocks"] = fold_affine_blocks(model)  # after loading: shipped weights map onto the unfolded layers
    return LoadedModel(source.task, model, cfg, source.config, source, info)


def _load_from_inference(model, source: ModelSource) -> dict:
    """Map an inference model's weights onto the dygraph model by first-use order, checking shapes."""
    from toolkit.engine import paddle

    pd = paddle()
    shipped = _read_inference_params(source.inference_dir)
    static = pd.jit.to_static(model, input_spec=get_task(source.task).input_spec(load_config(source.config, source.overrides)), full_graph=True)
    program = static.forward.concrete_program.main_program
    model.__dict__.pop("forward", None)  # to_static patched the instance; keep training in dygraph
    params = {p.name: p for p in model.parameters()}
    order = [n for n in _program_param_order(program) if n in params]
    if len(order) != len(shipped) or any(tuple(params[n].shape) != v.shape for n, (_, v) in zip(order, shipped)):
        bad = next(((n, tuple(params[n].shape), v.shape) for n, (_, v) in zip(order, shipped) if tuple(params[n].shape) != v.shape), None)
        raise ToolkitError(
            f"{source.inference_dir}: its {len(shipped)} parameters do not fit the architecture in {source.config} "
            f"({len(order)} parameters" + (f"; first mismatch {bad[0]}: {bad[1]} vs {bad[2]}" if bad else "") + ")",
            hint="pass a PaddleOCR config whose Architecture matches the model (a .yml source with Global.pretrained_model)",
        )
    for n, (_, value) in zip(order, shipped):
        params[n].set_value(value)
    return {"loaded_parameters": len(order)}


def _load_checkpoint(model, prefix: Path) -> dict:
    """Load a PaddleOCR training checkpoint (.pdparams), before rep() folds its batch norms."""
    from toolkit.engine import paddle

    pd = paddle()
    try:
        state = pd.load(str(prefix) + ".pdparams")
    except Exception as exc:
        raise ToolkitError(f"cannot read {prefix}.pdparams: {str(exc).splitlines()[-1][:200]}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    loaded = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.set_state_dict(loaded)
    return {"loaded_parameters": len(loaded), "missing": len(missing)}
