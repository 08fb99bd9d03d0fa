"""Bad inputs through the real CLI: a short actionable message, a non-zero exit, no traceback."""

from __future__ import annotations

import shutil

from conftest import REPO, assert_clean_failure, copy_tree, toolkit


def test_missing_model_file(tmp_path, zoo_det_dir, small_data):
    model = copy_tree(zoo_det_dir, tmp_path / "det_model")
    (model / "inference.pdiparams").unlink()
    proc = toolkit("quantize", "--run-dir", tmp_path / "run", "--tasks", "det", "--det", model, "--data", small_data)
    assert_clean_failure(proc, "inference.pdiparams is missing")


def test_corrupt_pdiparams(tmp_path, zoo_det_dir, small_data):
    model = copy_tree(zoo_det_dir, tmp_path / "det_model")
    params = model / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[: params.stat().st_size // 3])  # a truncated download
    proc = toolkit("quantize", "--run-dir", tmp_path / "run", "--tasks", "det", "--det", model, "--data", small_data)
    assert_clean_failure(proc, "cannot load the inference model", str(model))


def test_label_file_with_one_broken_json_line(tmp_path, small_data):
    data = copy_tree(small_data, tmp_path / "data")
    labels = data / "det" / "train.txt"
    lines = labels.read_text().splitlines()
    lines[2] = lines[2].replace('"points"', '"points" ', 1).replace("]]}", "]]", 1)  # drop a closing brace
    labels.write_text("\n".join(lines) + "\n")
    proc = toolkit("quantize", "--run-dir", tmp_path / "run", "--tasks", "det", "--data", data, "--steps", "1")
    assert_clean_failure(proc, f"{labels}:3:", "broken JSON", "--skip-bad-labels")


def test_unknown_target(tmp_path):
    proc = toolkit("convert", "--run-dir", tmp_path / "run", "--target", "android-arm65")
    assert_clean_failure(proc, "unknown target 'android-arm65'", "android-arm64")


def test_target_yaml_missing_a_field(tmp_path):
    tdir = tmp_path / "targets"
    tdir.mkdir()
    text = (REPO / "targets" / "linux-arm64.yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("version:"))
    (tdir / "linux-arm64.yaml").write_text(text)
    proc = toolkit("targets", "show", "linux-arm64", env={"TOOLKIT_TARGETS_DIR": str(tdir)})
    assert_clean_failure(proc, "linux-arm64.yaml", "lite.version")


def test_dataset_with_zero_usable_samples(tmp_path, small_data):
    data = copy_tree(small_data, tmp_path / "data")
    shutil.rmtree(data / "rec" / "images")  # every rec label now names a missing image
    proc = toolkit("quantize", "--run-dir", tmp_path / "run", "--tasks", "rec", "--data", data, "--skip-bad-labels", "--steps", "1")
    assert_clean_failure(proc, "no usable samples")


def test_unknown_zoo_model_and_bad_task(tmp_path):
    assert_clean_failure(toolkit("quantize", "--run-dir", tmp_path / "r", "--det", "zoo:nope"), "unknown zoo model 'nope'")
    assert_clean_failure(toolkit("quantize", "--run-dir", tmp_path / "r", "--tasks", "cls"), "unknown task cls")


def test_stage_out_of_order_says_what_to_run(tmp_path):
    (tmp_path / "run").mkdir()
    proc = toolkit("convert", "--run-dir", tmp_path / "run")
    assert_clean_failure(proc, "no exported model", "toolkit export")
