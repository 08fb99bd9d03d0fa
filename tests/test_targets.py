"""Target files: the shipped ones load, and broken ones give short file:line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ToolkitError
from toolkit.targets import TARGETS_DIR, Target, get_target, list_targets, load_target

SHIPPED = ["android-arm64", "android-armv7", "linux-arm64", "linux-armhf"]
BASE = (TARGETS_DIR / "linux-arm64.yaml").read_text()


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("TOOLKIT_TARGETS_DIR", raising=False)


def write(tmp_path: Path, text: str, name: str = "linux-arm64") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def edited(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def error(path: Path) -> ToolkitError:
    with pytest.raises(ToolkitError) as info:
        load_target(path)
    assert "Traceback" not in str(info.value) and "pydantic" not in str(info.value)
    return info.value


def test_shipped_targets_load():
    targets = list_targets()
    assert [t.name for t in targets] == SHIPPED
    by_name = {t.name: t for t in targets}
    assert by_name["android-arm64"].abi == "arm64-v8a" and by_name["android-arm64"].arch == "armv8"
    assert by_name["android-armv7"].abi == "armeabi-v7a" and by_name["android-armv7"].arch == "armv7"
    assert by_name["linux-arm64"].abi == "aarch64" and by_name["linux-arm64"].runtime.toolchain.triple == "aarch64-linux-gnu"
    assert by_name["linux-armhf"].abi == "armv7l" and by_name["linux-armhf"].arch == "armv7hf"
    for t in targets:
        assert isinstance(t, Target)
        assert t.opt.valid_targets == ["arm"]
        rt = t.runtime
        # The runtime is built from the opt version's tag, pinned by its full commit.
        assert rt.kind == "source" and rt.source.tag == t.lite.version and rt.source.commit == "f294964ab818071444d4b6e4d1575e837c28e23d"
        assert rt.cmake_options["ARM_TARGET_ARCH_ABI"] == t.arch and rt.cmake_options["LITE_BUILD_EXTRA"] == "ON"
        assert rt.cmake_options["ARM_TARGET_OS"] == {"android": "android", "linux": "armlinux"}[t.os]
        assert rt.opencv.sha256 and rt.clipper.sha256
        assert f"/{t.lite.version}/" in rt.archive.url  # the release archive alternative matches too
        assert rt.archive.lib_path.startswith(rt.archive.url.rsplit("/", 1)[1].removesuffix(".tar.gz") + "/")
        assert rt.toolchain.kind == {"android": "ndk", "linux": "gcc"}[t.os]
        assert t.lite.numpy == "numpy==1.21.6"
        assert t.images.runtime == f"toolkit-runtime-{t.name}"
        assert t.transport.kind == {"android": "adb", "linux": "ssh"}[t.os]


def test_get_target_and_env_override(tmp_path, monkeypatch):
    assert get_target("linux-armhf").transport.device_dir == "/opt/ppocr"
    write(tmp_path, edited("name: linux-arm64", "name: custom"), "custom")
    monkeypatch.setenv("TOOLKIT_TARGETS_DIR", str(tmp_path))
    assert get_target("custom").name == "custom"
    assert [t.name for t in list_targets()] == ["custom"]


def test_unknown_target_lists_known_ones():
    with pytest.raises(ToolkitError) as info:
        get_target("ios-arm64")
    assert info.value.message == "unknown target 'ios-arm64'"
    assert info.value.hint == "known targets: " + ", ".join(SHIPPED)


def test_missing_field_names_file_and_path(tmp_path):
    path = write(tmp_path, "".join(l + "\n" for l in BASE.splitlines() if not l.startswith("  version:")))
    err = error(path)
    assert err.message.endswith("linux-arm64.yaml: missing field 'lite.version'")
    assert err.hint.startswith("add it")


def test_wrong_enum_value_with_line(tmp_path):
    text = edited("power_mode: LITE_POWER_HIGH", "power_mode: FAST")
    err = error(write(tmp_path, text))
    assert f"linux-arm64.yaml:{line_of(text, 'power_mode')}: field 'defaults.power_mode': must be one of " in err.message
    assert "LITE_POWER_HIGH, LITE_POWER_LOW, LITE_POWER_FULL, LITE_POWER_NO_BIND" in err.message
    assert err.message.endswith("(got 'FAST')")


def test_yaml_syntax_error_with_line(tmp_path):
    text = edited("  kind: ssh\n", "  kind: [ssh\n")
    err = error(write(tmp_path, text))
    assert "invalid YAML" in err.message
    assert err.message.split(": invalid YAML")[0].rsplit(":", 1)[1].isdigit()


def test_tab_indent_points_at_line(tmp_path):
    err = error(write(tmp_path, "name: linux-arm64\n\tos: linux\n"))
    assert "linux-arm64.yaml:2: invalid YAML" in err.message


def test_unknown_extra_field(tmp_path):
    text = edited("  threads: 4\n", "  threads: 4\n  thread: 2\n")
    err = error(write(tmp_path, text))
    assert f"linux-arm64.yaml:{line_of(text, 'thread: 2')}: unknown field 'defaults.thread'" in err.message
    assert "threads, power_mode" in err.hint


def test_name_must_match_file_stem(tmp_path):
    err = error(write(tmp_path, BASE, "my-board"))
    assert "my-board.yaml:" in err.message
    assert "name 'linux-arm64' does not match the file name 'my-board'" in err.message


def test_unquoted_python_version_gets_quoting_hint(tmp_path):
    text = edited('python: "3.7"', "python: 3.7")
    err = error(write(tmp_path, text))
    assert f":{line_of(text, 'python: 3.7')}: field 'lite.python': must be a string" in err.message
    assert '"3.7"' in err.hint


def test_bad_sha256_and_duplicate_key(tmp_path):
    err = error(write(tmp_path, edited("sha256: null", "sha256: abc")))
    assert "field 'runtime.archive.sha256': must be null or 64 lowercase hex characters (got 'abc')" in err.message
    text = edited("  threads: 4\n", "  threads: 4\n  threads: 2\n")
    err = error(write(tmp_path, text))
    assert f":{line_of(text, 'threads: 2')}: field 'defaults.threads' appears twice" in err.message


def test_cross_field_checks(tmp_path):
    err = error(write(tmp_path, edited("accepted_abis: [aarch64]", "accepted_abis: [armv8l]")))
    assert "field 'accepted_abis': must include abi 'aarch64'" in err.message
    err = error(write(tmp_path, edited("    triple: aarch64-linux-gnu", "    ndk_version: r17c")))
    assert "field 'runtime.toolchain': kind 'gcc' needs triple" in err.message
    err = error(write(tmp_path, edited("    triple: aarch64-linux-gnu", "    triple: aarch64-linux-gnu\n    api_level: 21")))
    assert "field 'runtime.toolchain': kind 'gcc' does not use api_level" in err.message


def test_missing_targets_dir(tmp_path):
    with pytest.raises(ToolkitError) as info:
        list_targets(tmp_path / "nope")
    assert "targets directory not found" in info.value.message


def test_runtime_build_fields(tmp_path):
    # Bare ON/OFF are YAML booleans: read back as the words cmake wants.
    assert load_target(write(tmp_path, edited('LITE_BUILD_EXTRA: "ON"', "LITE_BUILD_EXTRA: ON"))).runtime.cmake_options["LITE_BUILD_EXTRA"] == "ON"
    text = edited("commit: f294964ab818071444d4b6e4d1575e837c28e23d", "commit: f294964")
    err = error(write(tmp_path, text))
    assert f":{line_of(text, 'commit: f294964')}: field 'runtime.source.commit': must be the full 40-character commit hash" in err.message
    err = error(write(tmp_path, edited("ARM_TARGET_ARCH_ABI: armv8", "ARM_TARGET_ARCH_ABI: armv7")))
    assert "field 'runtime': cmake_options.ARM_TARGET_ARCH_ABI must be 'armv8'" in err.message
    err = error(write(tmp_path, edited("tag: v2.12", "tag: v2.11")))
    assert "source.tag 'v2.11' must be lite.version 'v2.12'" in err.message
    err = error(write(tmp_path, edited("    LITE_WITH_ARM: \"ON\"", "    lite_with_arm: \"ON\"")))
    assert "field 'runtime.cmake_options': option names are cmake variables" in err.message
    err = error(write(tmp_path, edited("  kind: source", "  kind: archive").replace("  archive:\n", "  archived:\n", 1)))
    assert "unknown field 'runtime.archived'" in err.message
    err = error(write(tmp_path, edited("    kind: gcc\n    triple: aarch64-linux-gnu", "    kind: ndk\n    ndk_version: r17c\n    api_level: 21")))
    assert "kind 'ndk' needs url and sha256" in err.message
    # kind archive needs no source; the archive's sha256 may be null (recorded on first download)
    text = edited("  kind: source", "  kind: archive")
    start, end = text.index("  source:\n"), text.index("  archive:\n")
    t = load_target(write(tmp_path, text[:start] + text[end:]))
    assert t.runtime.kind == "archive" and t.runtime.source is None and t.runtime.archive.sha256 is None
