"""`toolkit deploy` and `toolkit devices` with the real clients (adb 1.0.41, OpenSSH) against
stand-in devices on 127.0.0.1 (see tests/devices/):

- adb: tests/devices/adb_device.py, a device-side ADB emulator reached with `adb connect`,
  running commands in an arm64 Debian chroot under qemu-user, each device with its own /data;
- ssh: the host's sshd with every session chrooted into the same rootfs.

The bundles are made by tests/devices/harness.make_bundle in the bundle stage's layout and
manifest format with small stand-in model files (their content does not matter to the
transport). Android's bionic runtime cannot run in the chroot, so runtime/bin/ppocr_runner
is tests/devices/standin_runner.c, statically linked for aarch64: it reads the config and
model files and times that, and recognises nothing (its batch mode too, so the plumbing of
toolkit/stages/verify.py runs in CI and says "standin"). With TOOLKIT_LITE_SOURCE (a Paddle
Lite clone with tag v2.12; skipped without it, also in CI) the real linux-arm64 runtime is
built (tests/test_runtime.py), deployed over ssh, smoke-run and verified against Paddle Inference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_clean_failure, copy_tree, toolkit

from devices import harness
from devices.harness import AdbDevice, AdbServer, Sshd, make_bundle

ROOT = "/data/local/tmp/ppocr"  # targets/android-*.yaml transport.device_dir


@pytest.fixture(scope="module")
def rootfs():
    harness.check_prerequisites(ssh=False)
    return harness.build_rootfs()


@pytest.fixture(scope="module")
def runner(rootfs, tmp_path_factory):
    return harness.build_runner(tmp_path_factory.mktemp("runner"))


@pytest.fixture(scope="module")
def adb_server(rootfs, tmp_path_factory):
    server = AdbServer(tmp_path_factory.mktemp("adbhome"))
    yield server
    server.stop()


@pytest.fixture
def make_device(rootfs, adb_server, tmp_path):
    made = []

    def make(name="dev", **kw) -> AdbDevice:
        dev = AdbDevice(rootfs, tmp_path / f"state-{name}", port=harness.device_port(), **kw).start()
        made.append(dev)
        adb_server.connect(dev)
        return dev

    yield make
    for dev in made:
        adb_server.adb("disconnect", dev.serial, check=False)
        dev.stop()


def tk(adb_server, *args):
    return toolkit(*args, env={k: adb_server.env[k] for k in ("HOME", "ANDROID_ADB_SERVER_PORT")}, timeout=300)


def deploy_json(adb_server, *args, devices: tuple = ()) -> tuple[subprocess.CompletedProcess, dict]:
    """`toolkit deploy --json ARGS`; for each emulated device given, the row for its serial must come
    from that device (the emulator puts its port in the model name)."""
    p = tk(adb_server, "deploy", "--json", *args)
    # The result document first; a failure adds an error document after it.
    res = json.JSONDecoder().raw_decode(p.stdout.strip())[0] if p.stdout.strip() else {}
    rows = {r["device"]: r for r in res.get("devices", [])}
    for dev in devices:
        facts = rows[f"adb:{dev.serial}"].get("facts") or {}
        assert facts.get("model") == dev.model, (facts, dev.serial)
    return p, res


def installed(dev: AdbDevice) -> Path:
    return dev.host_path(ROOT + "/current")


def device_runs(dev: AdbDevice) -> dict:
    """Run the installed bundle's smoke command on the device itself (not through adb)."""
    cmd = f"cd {ROOT}/current && LD_LIBRARY_PATH=runtime/lib runtime/bin/ppocr_runner --config config.json --image test/image.jpg " \
          "--threads 1 --power-mode LITE_POWER_HIGH --warmup 0 --repeats 1"
    out, err = dev.popen(cmd).communicate(timeout=60)
    return json.loads(out.decode().strip().splitlines()[-1])


def test_push_skip_smoke_benchmark_report(tmp_path, runner, adb_server, make_device):
    dev = make_device()
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner)
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, "--smoke", "--bench", "--warmup", "1", "--repeats", "2",
                         devices=(dev,))
    assert p.returncode == 0, p.stderr
    (r,) = res["devices"]
    n_files = len(list((run / "bundle" / "android-arm64").rglob("*.*"))) + 1  # + runtime/bin/ppocr_runner
    assert r["status"] == "ok" and r["sent"] == n_files and r["unchanged"] == 0
    assert r["facts"]["abi"] == "arm64-v8a"
    assert json.loads((installed(dev) / "manifest.json").read_text())["files"]["models/det.nb"]
    smoke, bench = r["smoke"]["result"], r["benchmark"]["result"]
    assert r["smoke"]["returncode"] == 0 and smoke["standin"] is True and smoke["lines"] == []
    assert (smoke["warmup"], smoke["repeats"]) == (0, 1)
    assert (bench["warmup"], bench["repeats"], bench["threads"], bench["power_mode"]) == (1, 2, 4, "LITE_POWER_HIGH")
    assert set(bench["timings_ms"]) == {"det", "rec", "total"}
    report = json.loads((run / "report.json").read_text())
    rep = report["deploy"]["android-arm64"][f"adb:{dev.serial}"]
    assert rep["benchmark"]["timings_ms"] == bench["timings_ms"] and rep["smoke"]["ok"]
    assert (run / "deploy" / "android-arm64" / f"adb_127.0.0.1_{dev.port}" / "benchmark.stdout").read_text().strip()

    # Second push, one model changed: only it and the manifest travel; the rest is hard-linked on the device.
    pushed = dev.push_bytes
    make_bundle(run, "android-arm64", runner, {"models/rec.nb": b"rec-v2" * 100})
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, devices=(dev,))
    assert p.returncode == 0, p.stderr
    (r2,) = res["devices"]
    assert (r2["sent"], r2["unchanged"]) == (2, n_files - 2) and r2["previous_release"] == r["release"]
    assert dev.push_bytes - pushed < 5000  # not the 500 kB runner again
    releases = dev.host_path(f"{ROOT}/releases")
    assert sorted(x.name for x in releases.iterdir()) == sorted([r["release"], r2["release"]])
    assert (releases / r["release"] / "runtime/bin/ppocr_runner").stat().st_ino == (releases / r2["release"] / "runtime/bin/ppocr_runner").stat().st_ino
    assert (installed(dev) / "models/rec.nb").read_bytes() == b"rec-v2" * 100

    # Third push, nothing changed: nothing sent.
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial)
    assert p.returncode == 0 and res["devices"][0]["sent"] == 0, p.stderr


@pytest.mark.parametrize("device, expected", [
    ({"abi": "armeabi-v7a", "abilist": ["armeabi-v7a", "armeabi"]}, ("ABI armeabi-v7a", "android-arm64 needs one of arm64-v8a")),
    ({"free_kb": 64}, ("0.1 MB free", "free space on the device")),
], ids=["abi-mismatch", "not-enough-space"])
def test_checks_refuse_before_anything_is_sent(tmp_path, runner, adb_server, make_device, device, expected):
    dev = make_device(**device)
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner)
    p = tk(adb_server, "deploy", "--run-dir", run, "--serial", dev.serial)
    assert_clean_failure(p, *expected)
    assert not dev.host_path(ROOT).exists()


def test_device_exit_status_is_honoured(tmp_path, runner, adb_server, make_device):
    dev = make_device()
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner, config={"det": {"model": "models/det.nb"}, "rec": {"model": "models/not-there.nb"}})
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, "--smoke")
    assert_clean_failure(p, "smoke run failed", "exit status 2", "not-there.nb")
    r = res["devices"][0]
    assert r["status"] == "failed" and r["smoke"]["returncode"] == 2 and r["release"]  # installed, then the run failed


def test_connection_dropped_mid_push_keeps_previous_bundle(tmp_path, runner, adb_server, make_device):
    dev = make_device()
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner)
    p, first = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, devices=(dev,))
    assert p.returncode == 0, p.stderr
    v1 = first["devices"][0]["release"]
    # v2 changes a 300 kB model; the device drops the connection 100 kB into it.
    make_bundle(run, "android-arm64", runner, {"models/det.nb": os.urandom(300_000)})
    dev.drop_after_push_bytes = dev.push_bytes + 100_000
    p = tk(adb_server, "deploy", "--run-dir", run, "--serial", dev.serial)
    assert_clean_failure(p, "push failed", "previous release")
    assert dev.drops == 1
    assert os.readlink(dev.host_path(f"{ROOT}/current")) == f"releases/{v1}"
    assert device_runs(dev)["standin"] is True  # the previous bundle still runs
    # The retry completes; it (re)connects by itself (`adb connect`, after `adb disconnect` while adb still shows
    # the dropped device offline), which is made certain here by forgetting the device in the adb server.
    adb_server.adb("disconnect", dev.serial, check=False)
    p, again = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, "--smoke", devices=(dev,))
    assert p.returncode == 0, p.stderr
    r = again["devices"][0]
    assert r["status"] == "ok" and r["previous_release"] == v1 and r["smoke"]["ok"]
    assert (installed(dev) / "models/det.nb").read_bytes() == (run / "bundle/android-arm64/models/det.nb").read_bytes()
    assert not [x for x in dev.host_path(ROOT).iterdir() if x.name.startswith(".staging")]
    # A file that arrives damaged while the push reports success is caught by the sha256 check before the switch.
    v2 = r["release"]
    make_bundle(run, "android-arm64", runner, {"models/rec.nb": b"rec-v3" * 100})
    dev.corrupt_next_push = True
    p = tk(adb_server, "deploy", "--run-dir", run, "--serial", dev.serial)
    assert_clean_failure(p, "differ from the bundle", "still runs its previous release")
    assert os.readlink(dev.host_path(f"{ROOT}/current")) == f"releases/{v2}"


def pwned(*roots: Path) -> list[Path]:
    """Files the injected commands would have created (on this machine or in the chroot)."""
    return [r / "tmp" / n for r in roots for n in ("pwned-tk", "pwned-tk2") if (r / "tmp" / n).exists()]


NASTY = "it's a \"x\" $(touch /tmp/pwned-tk) `touch /tmp/pwned-tk2`; & | > <"


def test_spaces_and_shell_metacharacters(tmp_path, runner, adb_server, make_device):
    dev = make_device()
    run = tmp_path / f"run dir {NASTY}"
    name = f"models/rec {NASTY}.nb"
    make_bundle(run, "android-arm64", runner, {name: b"rec" * 50, f"dict/{NASTY}.txt": b"x\n"},
                config={"det": {"model": "models/det.nb"}, "rec": {"model": name}})
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, "--smoke", devices=(dev,))
    assert p.returncode == 0, p.stderr
    r = res["devices"][0]
    assert r["smoke"]["result"]["models"]["rec"] == {**r["smoke"]["result"]["models"]["rec"], "path": name, "bytes": 150}
    assert (installed(dev) / name).read_bytes() == b"rec" * 50
    assert (installed(dev) / f"dict/{NASTY}.txt").exists()
    assert not pwned(Path("/"), dev.rootfs)
    # An unchanged re-deploy of those names links them on the device.
    p, res = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial)
    assert p.returncode == 0 and res["devices"][0]["sent"] == 0, p.stderr


def test_three_devices_in_parallel(tmp_path, runner, adb_server, make_device):
    devs = [make_device(f"d{i}") for i in range(3)]
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner)
    args = [a for d in devs for a in ("--serial", d.serial)]
    p, res = deploy_json(adb_server, "--run-dir", run, *args, "--bench", "--warmup", "0", "--repeats", "1", devices=tuple(devs))
    assert p.returncode == 0, p.stderr
    assert sorted(r["device"] for r in res["devices"]) == sorted(f"adb:{d.serial}" for d in devs)
    assert all(r["status"] == "ok" and r["benchmark"]["ok"] for r in res["devices"])
    for d in devs:
        assert (installed(d) / "manifest.json").exists()
    # The human table, one row per device; --all-devices finds the three and a fourth, 32-bit one,
    # which fails on its own row while the others deploy; the exit status says a device failed.
    bad = make_device("d32", abi="armeabi-v7a")
    p = tk(adb_server, "deploy", "--run-dir", run, "--all-devices")
    assert_clean_failure(p, "deploy failed on 1 of 4 device(s)", "ABI armeabi-v7a")
    rows = p.stdout.strip().splitlines()
    assert rows[0].split()[:5] == ["device", "status", "release", "sent", "unchanged"]
    table = {ln.split()[0]: ln.split() for ln in rows[1:]}
    assert sorted(table) == sorted(f"adb:{d.serial}" for d in [*devs, bad])
    assert all(table[f"adb:{d.serial}"][1:4:2] == ["ok", "0"] for d in devs)
    assert table[f"adb:{bad.serial}"][1] == "failed"
    report = json.loads((run / "report.json").read_text())
    assert len(report["deploy"]["android-arm64"]) == 4 and report["deploy"]["android-arm64"][f"adb:{bad.serial}"]["status"] == "failed"


def test_devices_lists_abi_and_matching_targets(adb_server, make_device):
    a = make_device("a")
    b = make_device("b", abi="armeabi-v7a", abilist=["armeabi-v7a", "armeabi"])
    p = tk(adb_server, "devices", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["device"]: r for r in json.loads(p.stdout)}
    assert rows[f"adb:{a.serial}"]["abi"] == "arm64-v8a" and rows[f"adb:{a.serial}"]["targets"] == ["android-arm64"]
    assert rows[f"adb:{b.serial}"]["targets"] == ["android-armv7"]
    p = tk(adb_server, "devices")
    assert a.serial in p.stdout and "android-armv7" in p.stdout


@pytest.fixture(scope="module")
def sshd(rootfs, tmp_path_factory):
    harness.check_prerequisites(ssh=True)
    s = Sshd(rootfs, tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()


def test_ssh_linux_arm64(tmp_path, runner, sshd, adb_server):
    run = tmp_path / f"run {NASTY}"
    name = f"models/rec {NASTY}.nb"
    make_bundle(run, "linux-arm64", runner, {name: b"rec" * 50}, config={"det": {"model": "models/det.nb"}, "rec": {"model": name}})
    spec = f"ssh:root@127.0.0.1:{sshd.port}"
    auth = ["--ssh-key", sshd.key, "--known-hosts", sshd.known_hosts]
    p, res = deploy_json(adb_server, "--target", "linux-arm64", "--run-dir", run, "--device", spec, *auth, "--smoke", "--bench",
                         "--warmup", "0", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    r = res["devices"][0]
    assert r["status"] == "ok" and r["facts"]["abi"] == "aarch64" and r["sent"] > 0
    assert r["facts"]["glibc"] == "2.36"  # the chroot's Debian 12; BUILD-INFO.json says what a runtime needs
    assert r["smoke"]["result"]["models"]["rec"]["path"] == name and r["benchmark"]["ok"]
    assert (sshd.private / "ppocr" / "current" / name).read_bytes() == b"rec" * 50
    assert not pwned(Path("/"), harness.ROOTFS)
    make_bundle(run, "linux-arm64", runner, {name: b"rec" * 50, "models/det.nb": b"det-v2"},
                config={"det": {"model": "models/det.nb"}, "rec": {"model": name}})
    p, res = deploy_json(adb_server, "--target", "linux-arm64", "--run-dir", run, "--serial", f"root@127.0.0.1:{sshd.port}", *auth)
    assert p.returncode == 0, p.stderr
    assert (res["devices"][0]["sent"], res["devices"][0]["previous_release"]) == (2, r["release"])
    # Host keys are checked: an unknown host is refused, with no prompt.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    p = tk(adb_server, "deploy", "--target", "linux-arm64", "--run-dir", run, "--device", spec, "--ssh-key", sshd.key, "--known-hosts", empty)
    assert_clean_failure(p, "Host key verification failed")
    # `toolkit devices` probes a named ssh board too.
    p = tk(adb_server, "devices", "--json", "--device", spec, *auth)
    assert p.returncode == 0, p.stderr
    (row,) = [r for r in json.loads(p.stdout) if r["device"] == spec]
    assert (row["abi"], row["targets"]) == ("aarch64", ["linux-arm64"])
    # The ABI check over ssh: an aarch64 board is not a linux-armhf one.
    make_bundle(run, "linux-armhf", runner)
    p = tk(adb_server, "deploy", "--target", "linux-armhf", "--run-dir", run, "--device", spec, *auth)
    assert_clean_failure(p, "ABI aarch64", "linux-armhf needs one of armv7l")


# ------------------------------------------------------------------ the real runtime (Paddle Lite source needed)
@pytest.mark.slow
def test_real_runtime_over_ssh_smoke_and_verify(tmp_path, sshd, adb_server, small_data):
    """The linux-arm64 runtime built from TOOLKIT_LITE_SOURCE, in a bundle with float .nb files of the
    built-in models, deployed over ssh to the arm64 chroot: --smoke reads the test image's text, and
    `--verify` finds the device's outputs equal to Paddle Inference's (the run's "quantized" models here
    are those same float models, so any difference is the runtime's). Skipped without a Lite source."""
    from test_runtime import arm64_runtime_dir, convert_zoo, text_image

    from toolkit.models.sources import resolve_source
    from toolkit.rundir import RunDir
    from toolkit.tasks import get_task

    runtime = arm64_runtime_dir()
    run = tmp_path / "run"
    nbs = convert_zoo(tmp_path / "nb")
    sources = {t: resolve_source(t, None) for t in ("det", "rec")}
    cfgs = {t: s.load_config() for t, s in sources.items()}
    cfg = {"lite_version": "v2.12", "threads": 1, "power_mode": "LITE_POWER_HIGH", **{t: get_task(t).runtime_config(c) for t, c in cfgs.items()}}
    files = {f"models/{t}.nb": p.read_bytes() for t, p in nbs.items()}
    files[cfg["rec"]["dict"]] = Path(cfgs["rec"]["Global"]["character_dict_path"]).read_bytes()
    files["test/image.jpg"] = text_image(tmp_path / "line.png", "Device truth 2024").read_bytes()  # stb_image reads PNG by content
    make_bundle(run, "linux-arm64", None, files, cfg, runtime=runtime)
    spec = f"ssh:root@127.0.0.1:{sshd.port}"
    p, res = deploy_json(adb_server, "--target", "linux-arm64", "--run-dir", run, "--device", spec, "--ssh-key", sshd.key,
                         "--known-hosts", sshd.known_hosts, "--smoke")
    assert p.returncode == 0, p.stderr
    smoke = res["devices"][0]["smoke"]["result"]
    assert smoke["lite_version"] == "v2.12" and "standin" not in smoke
    assert [ln["text"].replace(" ", "") for ln in smoke["lines"]] == ["Devicetruth2024"], smoke  # the model drops these spaces

    for t, s in sources.items():
        shutil.copytree(s.inference_dir, RunDir(run).quant_model(t))
    RunDir(run).update_state(sources={t: {"spec": s.spec, "overrides": []} for t, s in sources.items()}, datasets=[str(small_data)])
    p, res = deploy_json(adb_server, "--target", "linux-arm64", "--run-dir", run, "--device", spec, "--ssh-key", sshd.key,
                         "--known-hosts", sshd.known_hosts, "--verify", "--verify-samples", "2,6,1")
    assert p.returncode == 0, p.stderr
    out = res["devices"][0]["verify"]
    print(json.dumps({k: v for k, v in out.items() if k in ("det", "rec", "pipeline")}, default=str)[:3000])
    assert not out["standin"] and out["ok"]
    assert out["det"]["cosine_min"] >= 0.9999 and out["det"]["boxes_matched"] == out["det"]["boxes_host"]
    assert out["rec"]["identical"] == 1.0 and out["pipeline"]["identical"] >= 0.95
    assert (run / "deploy" / "linux-arm64").rglob("verify.json")
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["det"]["device"]["cosine_min"] >= 0.9999 and report["metrics"]["rec"]["device"]["identical"] == 1.0


def test_verify_with_the_standin_runner_compares_nothing(tmp_path, runner, sshd, adb_server, small_data):
    """CI's path: `toolkit deploy --verify` with the stand-in runner's batch mode over ssh: the result
    says standin and compares nothing; the samples are removed from the device; pull_file and
    pull_dir bring device files back byte for byte."""
    from toolkit.devices.ssh import SshTransport
    from toolkit.rundir import RunDir

    run = tmp_path / "run"
    make_bundle(run, "linux-arm64", runner)
    other = copy_tree(small_data, tmp_path / "other")  # a second dataset tops up det pages the first lacks (it has 4)
    meta = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps({**meta, "name": "other"}))
    RunDir(run).update_state(sources={t: {"spec": f"zoo:ppocrv4-mobile-{t}", "overrides": []} for t in ("det", "rec")},
                             datasets=[str(small_data), str(other)])
    spec = f"ssh:root@127.0.0.1:{sshd.port}"
    p, res = deploy_json(adb_server, "--target", "linux-arm64", "--run-dir", run, "--device", spec, "--ssh-key", sshd.key,
                         "--known-hosts", sshd.known_hosts, "--verify", "--verify-samples", "6,2,1")
    assert p.returncode == 0, p.stderr
    out = res["devices"][0]["verify"]
    assert out["standin"] is True and out["ok"] and "det" not in out and out["samples"] == {"det": 6, "rec": 2, "pipeline": 1}
    first = small_data.name  # a dataset without a name in dataset.json is named by its folder
    assert out["datasets"] == {"det": {first: 4, "other": 2}, "rec": {first: 2}, "pipeline": {first: 1}}
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["det"]["device"]["standin"] is True
    root = "/opt/ppocr"
    transport = SshTransport(f"root@127.0.0.1:{sshd.port}", identity=str(sshd.key), known_hosts=str(sshd.known_hosts))
    try:
        transport.pull_file(f"{root}/current/models/det.nb", tmp_path / "det.nb")
        transport.pull_dir(f"{root}/current/dict", tmp_path / "dict")
    finally:
        transport.close()
    assert (tmp_path / "det.nb").read_bytes() == (run / "bundle/linux-arm64/models/det.nb").read_bytes()
    assert (tmp_path / "dict" / "ppocr_keys_v1.txt").read_bytes() == b"a\nb\nc\n"
    assert not list((sshd.private / "ppocr").glob("verify-*"))  # the samples were removed from the device


def test_adb_pull_file_and_dir(tmp_path, runner, adb_server, make_device, monkeypatch):
    """pull_file / pull_dir through the real adb client (sync RECV and LIST) bring files back byte for byte."""
    from toolkit.devices.adb import AdbTransport
    from toolkit.errors import ToolkitError

    dev = make_device()
    run = tmp_path / "run"
    make_bundle(run, "android-arm64", runner, {"dict/more words.txt": b"x\ny\n"})
    p, _ = deploy_json(adb_server, "--run-dir", run, "--serial", dev.serial, devices=(dev,))
    assert p.returncode == 0, p.stderr
    for k in ("HOME", "ANDROID_ADB_SERVER_PORT"):
        monkeypatch.setenv(k, adb_server.env[k])
    t = AdbTransport(dev.serial)
    t.pull_file(f"{ROOT}/current/models/det.nb", tmp_path / "det.nb")
    t.pull_dir(f"{ROOT}/current/dict", tmp_path / "dict")
    bundle = run / "bundle" / "android-arm64"
    assert (tmp_path / "det.nb").read_bytes() == (bundle / "models/det.nb").read_bytes()
    assert sorted(p.name for p in (tmp_path / "dict").iterdir()) == ["more words.txt", "ppocr_keys_v1.txt"]
    assert (tmp_path / "dict" / "more words.txt").read_bytes() == b"x\ny\n"
    with pytest.raises(ToolkitError, match="cannot pull"):
        t.pull_file(f"{ROOT}/current/not-there", tmp_path / "nothing")
