"""The main job as a user runs it: `make demo` (the README's first command) on the real PP-OCRv4
models, real opt, real Paddle Inference, synthetic data and real document pages; the tests read
what it left. Its exit status is the first thing checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_clean_failure, copy_tree, toolkit
from toolkit.digest import sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def main_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("main") / "run"
    proc = subprocess.run(["make", "-C", str(REPO), "demo", f"RUN_DIR={run}"], capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-4000:])
    return run


@pytest.fixture(scope="session")
def report(main_run) -> dict:
    return json.loads((main_run / "report.json").read_text())


def test_the_main_job_judges_real_pages_and_meets_the_bars(report):
    """Both models within half a point on the real pages (the judged set) and on the synthetic set."""
    for task, key in (("det", "hmean"), ("rec", "acc")):
        m = report["metrics"][task]
        assert m["judged"] == "debian-manuals" and m["kind"] == "real", m.get("judged")
        assert set(m["sets"]) == {"debian-manuals", "synth"}, m["sets"].keys()
        for name, s in m["sets"].items():
            assert 100 * (s["float"][key] - s["quant"][key]) == pytest.approx(s["drop_points"], abs=1e-3)
            assert s["drop_points"] <= 0.5, (task, name, s["drop_points"])
    real = report["metrics"]
    assert real["det"]["float"]["images"] >= 12 and real["rec"]["float"]["lines"] >= 300
    assert report["metrics"]["det"]["sets"]["synth"]["float"]["images"] >= 100
    assert report["status"] == "ok"


def test_int8_nb_files_use_int8_kernels_and_are_small(report, main_run):
    for task, most in (("det", 0.30), ("rec", 0.30)):
        t = report["targets"]["android-arm64"][task]
        assert t["lite_version"] == "v2.12"
        assert t["int8_ops"] > 10 and t["int8_op_types"].get("conv2d", 0) > 10, t
        assert t["int8_nb_bytes"] <= most * t["float_nb_bytes"], (task, t["size_ratio"])
        assert (main_run / "nb" / "android-arm64" / f"{task}.int8.nb").stat().st_size == t["int8_nb_bytes"]


STORED_SCALES = """
import sys, numpy as np, paddle
paddle.enable_static()
exe = paddle.static.Executor(paddle.CPUPlace())
prog, _, _ = paddle.static.load_inference_model(sys.argv[1] + "/inference", exe)
scope, n, off = paddle.static.global_scope(), 0, 0
for op in prog.global_block().ops:
    if op.type == "fake_channel_wise_quantize_dequantize_abs_max":
        w = np.abs(np.array(scope.find_var(op.input("X")[0]).get_tensor()))
        s = np.array(scope.find_var(op.output("OutScale")[0]).get_tensor())
        m = np.moveaxis(w, op.attr("quant_axis"), 0).reshape(s.size, -1).max(1)
        n += s.size; off += int(np.sum(np.abs(s - m) > 1e-6 * m + 1e-30))
print(n, off)
"""


def test_the_exported_weight_scales_are_the_trained_weights(main_run):
    """Lite's opt quantizes each weight with the scale stored beside it in the exported model, so
    that scale must be max|w| of the stored weights (tests/test_export.py has why it was not)."""
    import sys

    for task in ("det", "rec"):
        out = subprocess.run([sys.executable, "-c", STORED_SCALES, str(main_run / "quant" / task / "model")],
                             capture_output=True, text=True, check=True).stdout.split()
        channels, off = int(out[-2]), int(out[-1])
        assert channels > 5000 and off == 0, (task, channels, off)


def test_preparing_for_lite_changes_no_number(main_run, tmp_path):
    """prepare_for_lite folds bias reshapes and drops attributes Lite does not read; neither runtime
    may compute anything else. The main job's det int8 model exported as Paddle writes it, with the
    fold only, and prepared: Paddle Inference bit-identical on a real page (with oneDNN's fusions the
    folded bias is added inside the convolution: last-bit differences), and opt's programs of the
    last two with the same ops, inputs, outputs and weights and every kept attribute equal."""
    import shutil

    import numpy as np
    import paddle.base.proto.framework_pb2 as fp
    from google.protobuf import text_format
    from PIL import Image

    from toolkit.models.sources import resolve_source
    from toolkit.rundir import RunDir, read_json
    from toolkit.runners.envs import converter_bin
    from toolkit.stages.evaluate import infer, predictor
    from toolkit.stages.export import prepare_for_lite, save_quantized
    from toolkit.stages.quantize.settings import QuantSettings
    from toolkit.targets import get_target

    run = RunDir(main_run)
    settings = QuantSettings.model_validate(read_json(run.quant_info("det", "qat"), "qat.json")["settings"])
    raw = save_quantized(resolve_source("det", "zoo:ppocrv4-mobile-det"), run.qat_state("det"), settings, tmp_path / "raw", for_lite=False)
    page = sorted((main_run / "data" / "real" / "det" / "images").iterdir())[0]
    x = np.asarray(Image.open(page).convert("RGB").resize((480, 640)), dtype="float32").transpose(2, 0, 1)[None] / 127.5 - 1
    opt = converter_bin(get_target("android-arm64"), "paddle_lite_opt")
    programs, sizes, outputs = {}, {}, {"raw": [infer(predictor(raw, threads=2, optimize=o), x) for o in (False, True)]}
    for name, drop in (("folded", False), ("prepared", True)):
        d = shutil.copytree(raw, tmp_path / name)
        assert prepare_for_lite(d, drop_unread=drop) > 50
        outputs[name] = [infer(predictor(d, threads=2, optimize=o), x) for o in (False, True)]
        for kind in ("protobuf", "naive_buffer"):
            subprocess.run([str(opt), f"--model_file={d / 'inference.pdmodel'}", f"--param_file={d / 'inference.pdiparams'}",
                            f"--optimize_out_type={kind}", f"--optimize_out={tmp_path / kind}-{name}", "--valid_targets=arm"],
                           check=True, capture_output=True)
        prog = fp.ProgramDesc()
        prog.ParseFromString((tmp_path / f"protobuf-{name}" / "model").read_bytes())
        programs[name] = (prog.blocks[0].ops, (tmp_path / f"protobuf-{name}" / "params").read_bytes())
        sizes[name] = (tmp_path / f"naive_buffer-{name}.nb").stat().st_size
    assert np.array_equal(outputs["raw"][0], outputs["prepared"][0]) and np.array_equal(outputs["folded"][1], outputs["prepared"][1])
    assert np.abs(outputs["raw"][1] - outputs["prepared"][1]).max() < 1e-5
    (ref_ops, ref_params), (ops, params) = programs["folded"], programs["prepared"]
    assert params == ref_params and [o.type for o in ops] == [o.type for o in ref_ops] and "calib" in {o.type for o in ops}
    dropped = set()
    for a, b in zip(ref_ops, ops):
        assert (list(a.inputs), list(a.outputs)) == (list(b.inputs), list(b.outputs)), a.type
        ref = {x.name: text_format.MessageToString(x) for x in a.attrs}
        kept = {x.name: text_format.MessageToString(x) for x in b.attrs}
        assert kept.items() <= ref.items(), (a.type, set(kept.items()) - set(ref.items()))
        dropped |= ref.keys() - kept.keys()
    assert {"Filter0_threshold", "use_mkldnn", "is_test"} <= dropped and "out_threshold" not in dropped
    assert sizes["prepared"] < 0.9 * sizes["folded"], sizes


def test_reference_noise_benchmark_on_the_main_job(main_run, tmp_path):
    """benchmarks/reference_noise.py (README figures): both host implementations of the float model
    read the same lines; the fake-quant program and its integer-domain rewrite are reported as
    measured, with each side's accuracy; the rewrite reads (nearly) as the fake-quant program does."""
    import sys

    out = tmp_path / "noise.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reference_noise.py"), "--run-dir", str(main_run), "--lines", "6",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "identical lines" in proc.stdout, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["float"]["lines"] == res["float"]["identical"] == 6 and res["float"]["acc"]["oneDNN"] == res["float"]["acc"]["native"]
    assert 0 <= res["fake-quant"]["identical"] <= 6 and set(res["fake-quant"]["acc"]) == {"oneDNN", "native"}
    assert abs(res["integer"]["acc"]["native"] - res["fake-quant"]["acc"]["native"]) <= 2 / 6 + 1e-9  # a broken rewrite reads nothing


def test_conversion_preserves_the_network_on_x86(report):
    for task in ("det", "rec"):
        check = report["metrics"][task]["x86_nb_check"]
        assert check["ok"] and check["max_abs_diff"] <= 1e-4, check


def test_bundle_has_models_manifest_and_checksums(main_run, report):
    b = main_run / "bundle" / "android-arm64"
    manifest = json.loads((b / "manifest.json").read_text())
    for rel in ("models/det.nb", "models/rec.nb", "config.json", "dict/ppocr_keys_v1.txt", "test/image.jpg"):
        assert manifest["files"][rel] == sha256_file(b / rel)
    assert set(manifest["files"]) == {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert manifest["versions"]["paddlepaddle"] == "2.6.2" and manifest["versions"]["paddleslim"] == "2.6.0"
    assert manifest["versions"]["paddlelite"] == "2.12"
    assert manifest["metrics"]["rec"]["quant"]["acc"] == report["metrics"]["rec"]["quant"]["acc"]
    assert "toolkit" in manifest["command"] and "--target android-arm64" in manifest["command"]
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["det"]["box_thresh"] == 0.6 and cfg["rec"]["image_shape"] == [3, 48, 320] and cfg["rec"]["width_multiple"] == 32


def test_det_and_rec_train_side_by_side(main_run, report):
    """On this 2-core machine the main job trains det and rec at once, each in a child process:
    rec's job was handed out before det's result came back, and each left its output log."""
    jobs = main_run / "jobs"
    for task in ("det", "rec"):
        for stage in ("quantize", "export"):
            assert (jobs / f"{stage}-{task}.log").exists() and (jobs / f"{stage}-{task}.result.json").exists(), (stage, task)
    first_done = min((jobs / f"quantize-{t}.result.json").stat().st_mtime for t in ("det", "rec"))
    assert max((jobs / f"quantize-{t}.job.json").stat().st_mtime for t in ("det", "rec")) < first_done
    assert {"quantize+export", "quantize:det", "quantize:rec", "export:det", "export:rec"} <= set(report["timings"])


def test_second_run_does_no_work(main_run):
    t0 = time.monotonic()
    proc = toolkit("run", "--target", "android-arm64", "--run-dir", main_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    stages = [line for line in proc.stderr.splitlines() if " in " in line and ("skipped" in line or "done" in line)]
    assert len(stages) >= 7 and all("skipped (up to date)" in line for line in stages if not line.startswith("data")), stages


def test_every_layer_int8_or_nearly(report, main_run):
    """No hand-written skip list; the search after QAT keeps at most 3 rec layers float, chosen by harm
    per extra byte, and records why."""
    from toolkit.models.sources import CONFIG_DIR
    from toolkit.models.config import load_config

    assert not load_config(CONFIG_DIR / "PP-OCRv4_mobile_rec.yml")["Quant"]["skip_layers"]
    for task in ("det", "rec"):
        search = json.loads((main_run / "quant" / task / "qat.json").read_text())["search"]
        assert len(search["float_layers"]) <= 3, search["float_layers"]
        assert search["float_extra_bytes"] == 3 * search.get("float_weight_count", 0)
        assert set(report["quantization"][task]["float_layers"]) == set(search["float_layers"])
        assert search["history_after_training"] and search["float_metric"] > 0.5
        rows = {r["layer"]: r for r in search["ranking"]}
        assert all(n in rows for n in search["float_layers"]), "a float layer without its ranking row"


def test_report_html_renders_in_headless_chromium(main_run, tmp_path):
    """Open report.html from disk in Debian's chromium: the charts (inline SVG) and tables are in
    the rendered DOM, and the screenshot is a real page, not a blank one."""
    import shutil

    import numpy as np
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed")
    page = (main_run / "report.html").resolve()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    ranked = [t for t in ("det", "rec") if json.loads((main_run / "quant" / t / "qat.json").read_text())["search"].get("ranking")]
    charts = ["chart-sizes", "chart-loss", "chart-search-det", "chart-search-rec", *(f"chart-sensitivity-{t}" for t in ranked)]
    for chart in charts:  # every search shape's page is checked in tests/test_report.py
        start = dom.find(f'id="{chart}"')
        assert start >= 0 and "<svg" in dom[start:start + 400], chart
    assert dom.count("<table") >= 3 and "Accuracy: float vs quantized" in dom  # metrics, sizes, search
    assert "data:image/jpeg;base64," in dom  # disagreement examples
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, "--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (2000, 1200)
    dark = (img < 128).mean()
    assert 0.01 < dark < 0.5, dark  # text and charts drawn on a light page


def test_analyze_ranks_every_layer(small_data, tmp_path):
    proc = toolkit("analyze", "--tasks", "det", "--data", small_data, "--run-dir", tmp_path / "an", "--json",
                   "--det-override", "Quant.search_samples=2", "--det-override", "Quant.calib_batches=1", "--probe", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)["det"]
    full = json.loads((tmp_path / "an" / "analyze" / "det" / "sensitivity.json").read_text())
    assert res["layers"] == len(full["ranking"]) > 50
    harm = [r["harm_per_kb"] for r in full["ranking"]]  # output error per kB that keeping the layer float costs
    assert harm == sorted(harm, reverse=True) and harm[0] > 0
    assert all(r["error"] >= 0 and r["weights"] > 0 for r in full["ranking"])
    assert [c["float_layers"] for c in full["top_k_curve"]] == [1, 2, 4, 8, 16]


def test_search_not_met_after_training_keeps_the_worst_layer_float(small_data, tmp_path):
    """The path the main job does not take: the check after QAT misses the budget (a margin no model
    can meet), so the trained model is ranked layer by layer and the top layer is kept float, in
    the record, in skip_layers and in the exported program."""
    run = tmp_path / "miss"
    proc = toolkit("quantize", "--tasks", "rec", "--data", small_data, "--run-dir", run, "--steps", "1", "--json",
                   "--rec-override", "Quant.search_samples=6", "--rec-override", "Quant.search_margin=50",
                   "--rec-override", "Quant.max_float_layers=1", "--rec-override", "Quant.probe_samples=2",
                   "--rec-override", "Quant.calib_batches=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((run / "quant" / "rec" / "qat.json").read_text())
    search = info["search"]
    assert search["met"] is False and len(search["ranking"]) > 20
    assert search["added_after_training"] == [search["ranking"][0]["layer"]] == search["float_layers"]
    assert [h["float_layers"] for h in search["history_after_training"]] == [0, 1]
    assert search["added_after_training"][0] in info["settings"]["skip_layers"] and search["float_extra_bytes"] > 0
    assert toolkit("export", "--run-dir", run, "--tasks", "rec").returncode == 0
    from paddle.base import core

    desc = core.ProgramDesc((run / "quant" / "rec" / "model" / "inference.pdmodel").read_bytes())
    block = desc.block(0)
    fake = [block.op(i) for i in range(block.op_size()) if block.op(i).type().startswith("fake_channel_wise")]
    assert len(fake) == len(search["ranking"]) - 1  # every layer the ranking saw is int8 but the one kept float


def test_convert_for_all_four_targets(main_run):
    proc = toolkit("convert", "--run-dir", main_run, "--all-targets", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert set(res["targets"]) == {"android-arm64", "android-armv7", "linux-arm64", "linux-armhf"}
    for name, r in res["targets"].items():
        for task in ("det", "rec"):
            assert r[task]["int8"]["int8_ops"] > 10
            assert (main_run / "nb" / name / f"{task}.int8.nb").exists()


def test_max_drop_judges_the_real_split(small_data, tmp_path):
    """Two datasets, one of them real: the verdict is the real one's drop, and --max-drop fails a run
    whose real-split drop exceeds it (PTQ of rec on 16 lines loses points)."""
    real = copy_tree(small_data, tmp_path / "pages")
    meta = json.loads((real / "dataset.json").read_text())
    (real / "dataset.json").write_text(json.dumps({**meta, "kind": "real", "name": "pages"}))
    run = tmp_path / "run"
    for args in (["quantize", "--method", "ptq", "--data", small_data, "--data", real], ["export"], ["convert"]):
        assert toolkit(*args, "--run-dir", run, "--tasks", "rec").returncode == 0
    ok = toolkit("evaluate", "--run-dir", run, "--tasks", "rec", "--max-drop", "100", "--json")
    res = json.loads(ok.stdout)["rec"]
    assert res["judged"] == "pages" and set(res["sets"]) == {"pages", "synth"} and res["drop_points"] == res["sets"]["pages"]["drop_points"]
    assert res["drop_points"] > 0.5, res["drop_points"]
    shown = toolkit("evaluate", "--run-dir", run, "--tasks", "rec", "--max-drop", "100", "--limit", "8")  # without --json: progress on stderr
    assert shown.returncode == 0 and "evaluate rec pages quant: 8/8" in shown.stderr, shown.stderr[-2000:]
    proc = toolkit("evaluate", "--run-dir", run, "--tasks", "rec", "--max-drop", "0.5")
    assert_clean_failure(proc, "quantization cost too much accuracy", "on pages", "--max-drop")


def test_evaluating_one_task_keeps_the_others_figures(main_run, tmp_path):
    """`toolkit evaluate --tasks rec` keeps det's figures while det's models are the ones they were
    measured on, and drops them once det's quantized model has changed; a bundle then refuses to
    go without det's figures."""
    run = copy_tree(main_run, tmp_path / "run")
    before = json.loads((run / "eval" / "metrics.json").read_text())
    assert toolkit("evaluate", "--run-dir", run, "--tasks", "rec", "--limit", "5", "--max-drop", "100").returncode == 0
    after = json.loads((run / "eval" / "metrics.json").read_text())
    assert after["det"] == before["det"] and all(len(s["float"]["predictions"]) == 5 for s in after["rec"]["sets"].values())
    params = run / "quant" / "det" / "model" / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-4] + b"\0\0\0\0")
    assert toolkit("evaluate", "--run-dir", run, "--tasks", "rec", "--limit", "6", "--max-drop", "100").returncode == 0
    assert set(json.loads((run / "eval" / "metrics.json").read_text())) == {"rec"}
    assert_clean_failure(toolkit("bundle", "--run-dir", run), "no figures for det", "toolkit evaluate")
    assert toolkit("bundle", "--run-dir", run, "--tasks", "rec").returncode == 0


def test_deploy_to_a_folder_twice(main_run, tmp_path):
    dev = tmp_path / "device"
    first = toolkit("deploy", "--run-dir", main_run, "--target", "android-arm64", "--device", f"dir:{dev}", "--json")
    assert first.returncode == 0, first.stderr
    second = toolkit("deploy", "--run-dir", main_run, "--target", "android-arm64", "--device", f"dir:{dev}", "--json")
    r1, r2 = json.loads(first.stdout), json.loads(second.stdout)
    assert r1["sent"] >= 5 and r2["release"] == r1["release"] and r2["sent"] == 0
    assert (dev / "current" / "models" / "det.nb").read_bytes() == (main_run / "bundle/android-arm64/models/det.nb").read_bytes()


def _train_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "quant" / "det" / "train_log.jsonl").read_text().splitlines()]


def test_interrupted_qat_resumes_where_it_stopped(small_data, tmp_path):
    args = ["quantize", "--tasks", "det", "--data", small_data, "--steps", "4", "--no-search", "--det-override", "Quant.save_every=2",
            "--det-override", "Quant.crop_size=160"]
    whole = tmp_path / "whole"
    assert toolkit(*args, "--run-dir", whole).returncode == 0

    cut = tmp_path / "cut"
    exe = Path(__import__("sys").executable).with_name("toolkit")
    proc = subprocess.Popen([str(exe), *map(str, args), "--run-dir", str(cut)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = cut / "quant" / "det" / "ckpt" / "step_000002.pdparams"
    deadline = time.monotonic() + 900
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # as hard as a killed machine
    proc.wait()
    assert ckpt.exists() and not (cut / "quant" / "det" / "qat_final.pdparams").exists()

    resumed = toolkit(*args, "--run-dir", cut, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["det"]["resumed_from"] == 2
    full, again = _train_log(whole), _train_log(cut)
    assert [r["step"] for r in again][-2:] == [3, 4]
    # Same batches, same state: the resumed run ends where the uninterrupted one did.
    assert abs(again[-1]["loss"] - full[-1]["loss"]) < 1e-3, (again, full)


@pytest.mark.parametrize("task", ["det", "rec"])
def test_ptq_alternative_converts_to_int8(small_data, tmp_path, task):
    run = tmp_path / "ptq"
    for args in (["quantize", "--method", "ptq"], ["export"], ["convert", "--json"]):
        proc = toolkit(*args, "--run-dir", run, "--tasks", task, *(["--data", small_data] if args[0] == "quantize" else []))
        assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["targets"]["android-arm64"][task]["int8"]["int8_ops"] > 10


def test_paddleocr_checkpoint_with_its_config(small_data, tmp_path):
    """A PaddleOCR training checkpoint (.pdparams before re-parameterisation) + config, as quant.py takes them."""
    from toolkit.engine import paddle
    from toolkit.models.config import architecture, load_config
    from toolkit.models.sources import CONFIG_DIR

    pd = paddle()
    from ppocr.modeling.architectures import build_model

    cfg_path = tmp_path / "det.yml"
    cfg_path.write_text((CONFIG_DIR / "PP-OCRv4_mobile_det.yml").read_text())
    model = build_model(architecture(load_config(cfg_path)))  # a training-time (un-repped) model
    pd.save(model.state_dict(), str(tmp_path / "best_accuracy.pdparams"))
    run = tmp_path / "run"
    proc = toolkit("quantize", "--run-dir", run, "--tasks", "det", "--data", small_data, "--det", cfg_path,
                   "--det-override", f"Global.pretrained_model={tmp_path / 'best_accuracy'}", "--steps", "1", "--no-search",
                   "--det-override", "Quant.crop_size=160", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["det"]["weights"]["loaded_parameters"] == len(model.state_dict())
    proc = toolkit("export", "--run-dir", run, "--tasks", "det")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "quant" / "det" / "model" / "inference.pdmodel").exists()
