"""Deployment targets, read from one YAML file per target in `targets/`.

The YAML files are the single source of truth for per-target facts (ABI, the Paddle Lite
source and build options or release archive, toolchain, OpenCV/Clipper sources, transport); code reads fields and never branches on a target name.
Validation errors are turned into one-line `file:line: field 'a.b': ...` messages
because a pydantic dump is not something a user can act on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from toolkit.errors import ToolkitError
from toolkit.share import targets_dir

TARGETS_DIR: Path = targets_dir()
ENV_TARGETS_DIR = "TOOLKIT_TARGETS_DIR"

# Names from Paddle Lite v2.13-rc lite/api/paddle_place.h (enum PowerMode).
PowerMode = Literal[
    "LITE_POWER_HIGH", "LITE_POWER_LOW", "LITE_POWER_FULL",
    "LITE_POWER_NO_BIND", "LITE_POWER_RAND_HIGH", "LITE_POWER_RAND_LOW",
]
# Every value paddle_lite_opt v2.13-rc accepts in --valid_targets (lite/api/tools/opt_base.cc).
# The runtime archive must contain kernels for what is listed; the shipped CPU archives only have arm.
OptTarget = Literal[
    "arm", "opencl", "x86", "x86_opencl", "host", "metal", "arm_metal", "x86_metal", "xpu",
    "huawei_kirin_npu", "huawei_ascend_npu", "rockchip_npu", "mediatek_apu", "imagination_nna",
    "amlogic_npu", "verisilicon_timvx", "android_nnapi", "qualcomm_qnn", "cambricon_mlu",
    "kunlunxin_xtcl", "eeasytech_npu",
]


class _Model(BaseModel):
    # extra="forbid": a misspelt key must be an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Opt(_Model):
    valid_targets: list[OptTarget] = Field(min_length=1)
    optimize_out_type: Literal["naive_buffer", "protobuf"] = "naive_buffer"

    @field_validator("valid_targets")
    @classmethod
    def _needs_arm(cls, v: list[str]) -> list[str]:
        # ARM CPU kernels are the fallback for every op another backend lacks.
        if "arm" not in v:
            raise ValueError("must include 'arm' (the CPU fallback)")
        return v


class Lite(_Model):
    version: str = Field(min_length=1)       # e.g. "v2.12": opt and device runtime must match
    python_wheel: str = Field(min_length=1)  # pip requirement that provides paddle_lite_opt
    python: str = Field(pattern=r"^3\.\d+$", description='a quoted Python version like "3.10"')
    numpy: str = Field(pattern=r"^numpy\s*[=<>!~]", description='a pip requirement for numpy like "numpy==1.21.6"')


class Download(_Model):
    """A file the runtime build fetches: checked against its sha256 before use."""

    url: str = Field(pattern=r"^https?://\S+$", description="an http(s) URL")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex characters")
    subdir: str = Field(default="", pattern=r"^$|^[^/]", description="a relative folder inside the archive")


class Archive(_Model):
    """A prebuilt Paddle Lite release archive."""

    url: str = Field(pattern=r"^https://\S+\.(tar\.gz|tgz|zip)$", description="an https URL of a .tar.gz, .tgz or .zip")
    # None: recorded in TOOLKIT_HOME/runtime/downloads.lock on the first download, checked after.
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$", description="null or 64 lowercase hex characters")
    lib_path: str = Field(pattern=r"^[^/].*\.so$", description="a relative path to a .so inside the archive")


class LiteSource(_Model):
    """Paddle Lite's git repository at one tag, pinned by its full commit hash."""

    repository: str = Field(pattern=r"^(https://|git@|ssh://)\S+$", description="a git URL")
    tag: str = Field(pattern=r"^v\d", description="a release tag like v2.12 (the runtime's version string comes from it)")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="the full 40-character commit hash of the tag")


class Toolchain(_Model):
    kind: Literal["ndk", "gcc"]
    triple: str | None = None       # gcc: cross compiler prefix, e.g. aarch64-linux-gnu
    ndk_version: str | None = None  # ndk: e.g. r17c
    url: str | None = Field(default=None, pattern=r"^https://\S+\.zip$", description="an https URL of the NDK's .zip")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex characters")
    api_level: int | None = Field(default=None, ge=16)

    @model_validator(mode="after")
    def _complete(self) -> "Toolchain":
        need = ("ndk_version", "url", "sha256", "api_level") if self.kind == "ndk" else ("triple",)
        if missing := [n for n in need if getattr(self, n) is None]:
            raise ValueError(f"kind '{self.kind}' needs {' and '.join(missing)}")
        # A field the other kind uses would be silently ignored, so it is an error here.
        if unused := [n for n in ("triple", "ndk_version", "url", "sha256", "api_level") if n not in need and getattr(self, n) is not None]:
            raise ValueError(f"kind '{self.kind}' does not use {', '.join(unused)}")
        return self


class Runtime(_Model):
    """How the device runtime (Paddle Lite light API + ppocr_runner) is made for this target."""

    kind: Literal["source", "archive"]
    source: LiteSource | None = None
    # Lite's cmake options (-DKEY=VALUE); YAML's bare ON/OFF are booleans, read back as "ON"/"OFF".
    cmake_options: dict[str, str] = Field(default_factory=dict)
    archive: Archive | None = None
    toolchain: Toolchain
    opencv: Download
    clipper: Download

    @field_validator("cmake_options", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ("ON" if x else "OFF") if isinstance(x, bool) else x for k, x in v.items()}
        return v

    @field_validator("cmake_options")
    @classmethod
    def _option_names(cls, v: dict[str, str]) -> dict[str, str]:
        if bad := [k for k in v if not re.fullmatch(r"[A-Z][A-Z0-9_]*", k)]:
            raise ValueError(f"option names are cmake variables like LITE_WITH_ARM, not {bad[0]!r}")
        if bad := [k for k, x in v.items() if not re.fullmatch(r"[A-Za-z0-9_.+-]*", x)]:
            raise ValueError(f"{bad[0]}: a value must be one word of letters, digits and _.+- (got {v[bad[0]]!r})")
        return v

    @model_validator(mode="after")
    def _kind_complete(self) -> "Runtime":
        if self.kind == "source" and (self.source is None or not self.cmake_options):
            raise ValueError("kind 'source' needs source and cmake_options")
        if self.kind == "archive" and self.archive is None:
            raise ValueError("kind 'archive' needs archive")
        return self


class Defaults(_Model):
    threads: int = Field(ge=1, le=64)
    power_mode: PowerMode


class Transport(_Model):
    kind: Literal["adb", "ssh"]
    device_dir: str = Field(pattern=r"^/", description="an absolute path on the device")


class Images(_Model):
    runtime: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$", description="a lowercase docker image name")


class Target(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="lowercase letters, digits and '-'")
    description: str
    os: Literal["android", "linux"]
    arch: Literal["armv8", "armv7", "armv7hf"]  # Paddle Lite's names; armv7hf is its 32-bit armlinux
    abi: str
    accepted_abis: list[str] = Field(min_length=1)
    opt: Opt
    lite: Lite
    runtime: Runtime
    defaults: Defaults
    transport: Transport
    images: Images

    @field_validator("runtime")
    @classmethod
    def _runtime_matches(cls, v: Runtime, info: ValidationInfo) -> Runtime:
        # A field validator so the error points at the runtime section, not the top level.
        want = {"ARM_TARGET_ARCH_ABI": info.data.get("arch"), "ARM_TARGET_OS": {"android": "android", "linux": "armlinux"}.get(info.data.get("os"))}
        for key, value in want.items():
            if v.kind == "source" and value and v.cmake_options.get(key) != value:
                raise ValueError(f"cmake_options.{key} must be {value!r} for this target's os/arch (got {v.cmake_options.get(key)!r})")
        lite = info.data.get("lite")
        if v.kind == "source" and lite is not None and v.source.tag != lite.version:
            raise ValueError(f"source.tag {v.source.tag!r} must be lite.version {lite.version!r}: the runtime refuses .nb files of another version")
        if (v.toolchain.kind == "ndk") != (info.data.get("os") == "android"):
            raise ValueError(f"toolchain kind {v.toolchain.kind!r} does not build for os {info.data.get('os')!r} (android: ndk, linux: gcc)")
        return v

    @field_validator("accepted_abis")
    @classmethod
    def _has_abi(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # A field validator (not a model one) so the error points at this line.
        abi = info.data.get("abi")
        if abi is not None and abi not in v:
            raise ValueError(f"must include abi '{abi}'")
        return v


def resolve_targets_dir(targets_dir: Path | None = None) -> Path:
    """Explicit argument, else $TOOLKIT_TARGETS_DIR (read per call so tests and users can set it late), else TARGETS_DIR."""
    return Path(targets_dir or os.environ.get(ENV_TARGETS_DIR) or TARGETS_DIR)


def _shown(path: Path) -> str:
    """Path as the user would type it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """Deepest YAML node along a pydantic error location, for its line number."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                # The key itself is the best place to point for an unknown/invalid key.
                return next((k for k, _ in node.value if k.value == part), node)
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field at loc[-1], to list the allowed keys."""
    model: Any = Target
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        # `X | None` fields: the model inside the Optional.
        options = [field.annotation, *get_args(field.annotation)] if field else []
        model = next((a for a in options if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


def _duplicate_key(node: yaml.Node | None, path: str = "") -> tuple[str, yaml.Node] | None:
    """PyYAML keeps the last of two equal keys silently; a repeated key is almost always a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            key = f"{path}{k.value}"
            if k.value in seen:
                return key, k
            seen.add(k.value)
            if dup := _duplicate_key(v, key + "."):
                return dup
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if dup := _duplicate_key(item, f"{path}{i}."):
                return dup
    return None


def _describe(err: dict, where: str, root: yaml.Node | None) -> tuple[str, str]:
    """One pydantic error -> (short message, hint)."""
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc)
    example = "see targets/android-arm64.yaml for an example"
    node = _node_at(root, loc)
    at = f"{where}:{node.start_mark.line + 1}" if node is not None else where
    kind, got = err["type"], err.get("input")
    model = _model_at(loc)
    spec = model.model_fields.get(loc[-1]) if model and loc and isinstance(loc[-1], str) else None
    if kind == "missing":
        return f"{where}: missing field '{field}'", f"add it; {example}"
    if kind == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if model else ""
        return f"{at}: unknown field '{field}'", f"remove it or fix the spelling; allowed here: {allowed}"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        return f"{at}: field '{field}': must be one of {choices} (got {got!r})", "use one of the listed values"
    subject = f"field '{field}'" if field else "top level"
    hint = example
    if kind in ("model_type", "dict_type"):
        msg = "must be a mapping of fields"
    elif kind == "string_type":
        msg = "must be a string"
    elif kind == "list_type":
        msg = "must be a list, e.g. [a, b]"
    elif kind == "string_pattern_mismatch" and spec is not None and spec.description:
        msg = f"must be {spec.description}"
    else:
        msg = re.sub(r"^Value error, ", "", err["msg"])
        msg = msg[:1].lower() + msg[1:]
    if kind == "string_type" and isinstance(got, (int, float)):
        raw = node.value if isinstance(node, yaml.ScalarNode) else got
        hint = f'quote it: "{raw}" (YAML reads unquoted 3.10 as the number 3.1)'
    shown_got = "" if isinstance(got, (dict, list)) or kind == "value_error" else f" (got {got!r})"
    return f"{at}: {subject}: {msg}{shown_got}", hint


def load_target(path: Path) -> Target:
    """Parse and validate one target file; every failure is a ToolkitError naming file, line and field."""
    path = Path(path)
    where = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ToolkitError(f"{where}: cannot read target file: {e.strerror or e}", hint="check the path") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ToolkitError(f"{where}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                           hint="save the target file as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ToolkitError(f"{where}{line}: invalid YAML: {problem}", hint="fix the syntax at that line") from None
    if dup := _duplicate_key(root):
        raise ToolkitError(f"{where}:{dup[1].start_mark.line + 1}: field '{dup[0]}' appears twice",
                           hint="keep only one of them")
    if not isinstance(data, dict):
        raise ToolkitError(f"{where}: expected a mapping of fields at the top level",
                           hint="see targets/android-arm64.yaml for an example")
    try:
        target = Target.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        lines = [_describe(err, where, root)[0] for err in errors[:3]]
        if len(errors) > 3:
            lines.append(f"... and {len(errors) - 3} more")
        raise ToolkitError("\n".join(lines), hint=_describe(errors[0], where, root)[1]) from None
    if target.name != path.stem:
        node = _node_at(root, ("name",))
        raise ToolkitError(
            f"{where}:{node.start_mark.line + 1}: name '{target.name}' does not match the file name '{path.stem}'",
            hint=f"set name: {path.stem}, or rename the file to {target.name}.yaml",
        )
    return target


def _names(directory: Path) -> list[str]:
    if not directory.is_dir():
        raise ToolkitError(f"targets directory not found: {_shown(directory)}",
                           hint=f"run from the repository checkout or set {ENV_TARGETS_DIR}")
    return sorted(p.stem for p in directory.glob("*.yaml"))


def get_target(name: str, targets_dir: Path | None = None) -> Target:
    """Load one target by name; only its own file is parsed, so a broken sibling doesn't block it."""
    directory = resolve_targets_dir(targets_dir)
    names = _names(directory)
    if name not in names:
        raise ToolkitError(f"unknown target '{name}'",
                           hint=f"known targets: {', '.join(names) or f'none (no *.yaml in {_shown(directory)})'}")
    return load_target(directory / f"{name}.yaml")


def list_targets(targets_dir: Path | None = None) -> list[Target]:
    """All targets (*.yaml), sorted by name; an invalid file is reported rather than skipped."""
    directory = resolve_targets_dir(targets_dir)
    return [load_target(directory / f"{n}.yaml") for n in _names(directory)]
