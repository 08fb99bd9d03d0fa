"""PaddleOCR-format configs: reading them, `-o Section.key=value` overrides, the dictionary."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ToolkitError


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


def architecture(cfg: dict) -> dict:
    """The config's Architecture for ppocr's build_model, with the head sizes the dictionary implies."""
    arch = copy.deepcopy(cfg["Architecture"])
    head = arch.get("Head") or {}
    if head.get("name") == "MultiHead":
        n = len(dictionary_chars(cfg)) + 1  # + CTC blank
        head["out_channels_list"] = {"CTCLabelDecode": n, "NRTRLabelDecode": n + 3}
    return arch
