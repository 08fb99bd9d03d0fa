"""Every fault a user can cause, through the real CLI: exit status 2, an `error:` line that names
the file or option, a hint, no traceback, no `internal error`, and the run directory and the
device left exactly as they were (their trees are compared before and after).

The run directory comes from a quick det-only pipeline (PTQ, export, convert, a two-image
evaluation, bundle) made once for the module and copied for each case.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, copy_tree, toolkit

TARGET = "android-arm64"


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (the command's own lock files excluded)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (".lock", ".manifest.lock")}


def assert_fault(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err + proc.stdout and "internal error" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert "hint: " in err, err
    for n in needles:
        assert n in err, f"{n!r} not in:\n{err}"


@pytest.fixture(scope="module")
def prepared(small_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    for args in (["quantize", "--method", "ptq", "--data", small_data], ["export"], ["convert"], ["evaluate", "--limit", "2", "--max-drop", "100"],
                 ["bundle"]):
        proc = toolkit(*args, "--run-dir", run, "--tasks", "det")
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return run


@pytest.fixture
def run(prepared, tmp_path) -> Path:
    return copy_tree(prepared, tmp_path / "run")


def _bad_dataset(small_data: Path, root: Path) -> Path:
    data = copy_tree(small_data, root / "bad-data")
    images = sorted((data / "det" / "images").glob("train_*.jpg"))
    images[0].write_bytes(b"")                                   # zero bytes
    images[1].write_bytes(os.urandom(3000))                      # random bytes
    images[2].write_text("this is not an image\n")               # text
    return data


NUMBERS = [
    (["quantize", "--steps", "0"], "--steps 0"), (["quantize", "--steps", "-3"], "--steps -3"), (["quantize", "--lr", "-1"], "--lr -1"),
    (["quantize", "--lr", "0"], "--lr 0"), (["quantize", "--batch-size", "0"], "--batch-size 0"), (["quantize", "--device", "tpu"], "--device 'tpu'"),
    (["quantize", "--nproc", "zero"], "--nproc 'zero'"), (["quantize", "--skip-layer", "foo"], "--skip-layer"),
    (["evaluate", "--limit", "0"], "--limit"), (["evaluate", "--limit", "-1"], "--limit"), (["evaluate", "--max-drop", "-1"], "--max-drop"),
    (["quantize", "-O", "Quant.steps=abc", "--tasks", "det"], "Quant.steps"), (["quantize", "-O", "Quant.stpes=3", "--tasks", "det"], "Quant.stpes"),
    (["run", "--deploy", "bogus:x"], "bogus:x"), (["quantize", "--tasks", "cls"], "--tasks cls"),
]


@pytest.mark.parametrize("args,needle", NUMBERS, ids=[" ".join(a) for a, _ in NUMBERS])
def test_bad_numbers_and_choices(run, small_data, args, needle):
    before = tree(run)
    proc = toolkit(*args, "--run-dir", run, *(["--data", small_data] if args[0] in ("quantize", "run") else []))
    assert_fault(proc, needle)
    assert tree(run) == before


def test_corrupt_nb_is_not_bundled(run):
    nb = run / "nb" / TARGET / "det.int8.nb"
    nb.write_bytes(nb.read_bytes()[:1000])
    before = tree(run)
    assert_fault(toolkit("bundle", "--run-dir", run, "--tasks", "det"), str(nb), "toolkit convert")
    assert tree(run) == before


def test_damaged_bundle_is_not_deployed(run, tmp_path):
    nb = run / "bundle" / TARGET / "models" / "det.nb"
    nb.write_bytes(nb.read_bytes()[:1000])
    dev = tmp_path / "device"
    before = tree(run)
    assert_fault(toolkit("deploy", "--run-dir", run, "--target", TARGET, "--device", f"dir:{dev}"), "bundle is damaged", "models/det.nb")
    assert tree(run) == before and not dev.exists()


def test_second_command_on_a_busy_run_directory(run):
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.seek(0)
        held.truncate()
        held.write("pid 1: toolkit convert")
        held.flush()
        before = tree(run)
        proc = toolkit("convert", "--run-dir", run, "--tasks", "det")
    assert_fault(proc, "is in use by pid 1: toolkit convert", "one command at a time")
    assert tree(run) == before


def _as_nobody() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a command as another user")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_read_only_run_directory_deploy_touches_no_device(prepared, tmp_path):
    prefix = _as_nobody()
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="toolkit-ro-", dir="/tmp"))  # a place another user can reach
    os.chmod(top, 0o755)
    run = copy_tree(prepared, top / "run")
    dev = top / "device"
    dev.mkdir()
    os.chmod(dev, 0o777)
    for p in [run, *run.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    before = tree(run)
    exe = Path(sys.executable).with_name("toolkit")
    proc = subprocess.run([*prefix, str(exe), "deploy", "--run-dir", str(run), "--target", TARGET, "--device", f"dir:{dev}"],
                          capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, cwd=str(tmp_path))
    try:
        assert_fault(proc, str(run), "writable")
        assert tree(run) == before and not any(dev.iterdir())
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_run_directory_is_a_file(tmp_path):
    f = tmp_path / "run"
    f.write_text("x")
    assert_fault(toolkit("report", "--run-dir", f), "is a file")


def test_typo_run_directory_is_not_created(tmp_path):
    for cmd in (["report"], ["bundle"], ["export"], ["evaluate"]):
        assert_fault(toolkit(*cmd, "--run-dir", tmp_path / "rnu"), "no such run directory", "typo")
    assert not (tmp_path / "rnu").exists()


@pytest.mark.parametrize("name", ["run.json", "manifest.json", "eval/metrics.json"])
def test_damaged_json_records(run, name):
    (run / name).write_text('{"half": ')
    before = tree(run)
    cmd = {"run.json": ["export", "--tasks", "det"], "manifest.json": ["convert", "--tasks", "det"], "eval/metrics.json": ["bundle", "--tasks", "det"]}[name]
    assert_fault(toolkit(*cmd, "--run-dir", run), str(run / name), "delete it")
    assert tree(run) == before


def test_data_check_names_every_bad_image(small_data, tmp_path):
    data = _bad_dataset(small_data, tmp_path)
    human, doc = toolkit("data", "check", "--data", data), toolkit("data", "check", "--data", data, "--json")
    for proc in (human, doc):
        assert_fault(proc, "3 problem(s)")
    listed = human.stdout + "\n".join(json.loads(doc.stdout)["det/train"]["problems"])
    for why in ("empty file", "not a readable image"):
        assert why in listed, listed
    assert all(f"{data / 'det' / 'train.txt'}:{n}:" in listed for n in (1, 2, 3)), listed


def test_training_names_every_bad_image(small_data, tmp_path):
    data = _bad_dataset(small_data, tmp_path)
    run = tmp_path / "r"
    assert_fault(toolkit("quantize", "--run-dir", run, "--tasks", "det", "--data", data, "--steps", "1"),
                 "3 image(s)", "det/train.txt:1:", "--skip-bad-labels")


def test_data_check_of_a_missing_folder():
    assert_fault(toolkit("data", "check", "--data", "/nonexistent"), "/nonexistent")


def test_target_yaml_not_utf8(tmp_path):
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "linux-arm64.yaml").write_bytes((REPO / "targets" / "linux-arm64.yaml").read_bytes().replace(b"64-bit", b"64\xff-bit"))
    assert_fault(toolkit("targets", "show", "linux-arm64", env={"TOOLKIT_TARGETS_DIR": str(tdir)}), "linux-arm64.yaml", "UTF-8")


def test_full_disk_records_nothing_as_done(small_data, tmp_path):
    """PTQ into a run directory on a 16 MB filesystem: the model does not fit; the error says so and
    no partial model is recorded (the next command on a roomier disk redoes the work)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = toolkit("quantize", "--method", "ptq", "--tasks", "rec", "--data", small_data, "--run-dir", mnt / "run")
        assert_fault(proc, "no space left")
        manifest = mnt / "run" / "manifest.json"
        assert not manifest.exists() or "quantize:rec" not in json.loads(manifest.read_text())["stages"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_json_errors_are_json(tmp_path):
    proc = toolkit("report", "--run-dir", tmp_path / "missing", "--json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["status"] == "error" and "no such run directory" in doc["error"]["message"] and doc["error"]["hint"]


def test_devices_without_adb_still_lists_named_devices(tmp_path):
    env = {"TOOLKIT_ADB": str(tmp_path / "no-adb-here")}
    proc = toolkit("devices", "--device", f"dir:{tmp_path / 'dev'}", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["device"].startswith("dir:")
    assert_fault(toolkit("devices", env=env), "adb")


@pytest.mark.slow
def test_ctrl_c_says_how_to_continue_and_resume_logs_each_step_once(small_data, tmp_path):
    run = tmp_path / "run"
    args = ["quantize", "--tasks", "det", "--data", str(small_data), "--steps", "4", "--no-search", "-O", "Quant.save_every=1",
            "-O", "Quant.crop_size=160", "--run-dir", str(run)]
    exe = Path(sys.executable).with_name("toolkit")
    # As from a terminal: a shell without job control starts background commands with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler (a CI script run with `&`).
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    log = run / "quant" / "det" / "train_log.jsonl"  # two steps done (checkpoints rotate; the log does not)
    deadline = time.monotonic() + 600
    while (not log.exists() or len(log.read_text().splitlines()) < 2) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err, err
    resumed = toolkit(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "quant" / "det" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], steps


@pytest.mark.slow
def test_side_by_side_training_a_failed_task_keeps_the_others_work(small_data, tmp_path):
    """`toolkit run` trains det and rec at once, each in a child process (this machine has 2 cores).
    det's training images are broken: the run fails with det's own clear message, and rec, which
    was fine, was trained, exported and recorded, so the next run does not redo it."""
    data = _bad_dataset(small_data, tmp_path)
    run = tmp_path / "run"
    proc = toolkit("run", "--run-dir", run, "--data", data, "--steps", "1", "--no-search", "--max-drop", "100")
    assert_fault(proc, "3 image(s)", "det/train.txt:1:", "--skip-bad-labels")
    assert "side by side" in proc.stderr and "rec: failed" not in proc.stderr, proc.stderr[-3000:]
    assert "rec: training done; the check of the trained model and export follow" in proc.stderr, proc.stderr[-3000:]
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"quantize:rec", "export:rec"} <= set(stages) and "quantize:det" not in stages, stages.keys()
    assert (run / "jobs" / "quantize-rec.log").exists() and (run / "quant" / "rec" / "model" / "inference.pdmodel").exists()
    steps = [json.loads(ln)["step"] for ln in (run / "quant" / "rec" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1]
