"""Run-directory bookkeeping and the atomic dir deploy, on real files."""

from __future__ import annotations

import json

import pytest

from toolkit.digest import hash_json, sha256_file
from toolkit.errors import ToolkitError
from toolkit.jobs import DeployJob
from toolkit.rundir import RunDir, atomic_dir
from toolkit.stages.deploy import deploy
from toolkit.targets import get_target


def test_stage_skipped_only_when_key_and_outputs_match(tmp_path):
    run = RunDir(tmp_path)
    out = tmp_path / "out.txt"
    calls = []

    def work(text="a"):
        calls.append(text)
        out.write_text(text)
        return {"n": len(calls)}, [out]

    k = hash_json({'x': 1})
    assert run.run_stage("s", k, work)["skipped"] is False
    assert run.run_stage("s", k, work)["skipped"] is True          # same key, same output
    assert run.run_stage("s", hash_json({'x': 2}), work)["skipped"] is False  # new inputs
    out.write_text("tampered")
    assert run.run_stage("s", hash_json({'x': 2}), work)["skipped"] is False  # output changed behind our back
    assert len(calls) == 3


def test_atomic_dir_keeps_old_content_on_failure(tmp_path):
    final = tmp_path / "d"
    with atomic_dir(final) as tmp:
        (tmp / "f").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "f").write_text("v2")
            raise RuntimeError("killed mid-write")
    assert (final / "f").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dirs left behind


def _fake_bundle(run: RunDir, target: str, content: dict[str, bytes]) -> None:
    """A bundle as the bundle stage lays it out (models, manifest with sha256 of every file)."""
    b = run.bundle_dir(target)
    b.mkdir(parents=True, exist_ok=True)
    for rel, data in content.items():
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(data)
    files = {rel: sha256_file(b / rel) for rel in content}
    (b / "manifest.json").write_text(json.dumps({"target": target, "files": files}))


def test_dir_deploy_is_atomic_and_skips_unchanged_files(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    target = get_target("android-arm64")
    dev = tmp_path / "device"
    _fake_bundle(run, target.name, {"models/det.nb": b"det-v1", "models/rec.nb": b"rec-v1"})
    first = deploy(DeployJob(target=target, device=f"dir:{dev}"), run)
    assert first["sent"] == 3 and (dev / "current" / "models" / "det.nb").read_bytes() == b"det-v1"

    _fake_bundle(run, target.name, {"models/det.nb": b"det-v1", "models/rec.nb": b"rec-v2"})
    second = deploy(DeployJob(target=target, device=f"dir:{dev}"), run)
    assert second["unchanged"] == 1 and second["sent"] == 2  # det.nb reused; rec.nb and manifest sent
    assert second["previous_release"] == first["release"]
    assert (dev / "current" / "models" / "rec.nb").read_bytes() == b"rec-v2"

    # A deploy that fails half-way (the disk fills after one file) leaves the previous bundle in place.
    _fake_bundle(run, target.name, {"models/det.nb": b"det-v3", "models/rec.nb": b"rec-v3"})
    import shutil

    real_copy, copied = shutil.copy2, []

    def copy_then_fail(src, dst):
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(src)
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copy2", copy_then_fail)
    with pytest.raises(ToolkitError, match="No space left on device"):
        deploy(DeployJob(target=target, device=f"dir:{dev}"), run)
    assert (dev / "current" / "models" / "rec.nb").read_bytes() == b"rec-v2"
    assert not [p for p in dev.iterdir() if p.name.startswith(".staging-")]


def test_deploy_without_bundle_says_what_to_run(tmp_path):
    with pytest.raises(ToolkitError, match="no bundle"):
        deploy(DeployJob(target=get_target("android-arm64"), device=f"dir:{tmp_path / 'dev'}"), RunDir(tmp_path / "run"))
