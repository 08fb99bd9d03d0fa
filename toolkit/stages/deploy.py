"""Stage 6: deliver a target's bundle to devices, atomically, skipping unchanged files; then,
on request, run the bundle's smoke command and a benchmark there.

Per device: check ABI (against target.accepted_abis) and free space (against the bundle
size), install as a new release (see toolkit/devices/base.py), then run the on-device runner:

  cd <root>/current && LD_LIBRARY_PATH=runtime/lib runtime/bin/ppocr_runner --config config.json
      --image test/image.jpg --threads N --power-mode MODE --warmup W --repeats R

whose last stdout line is one JSON object (lines, timings_ms, threads, power_mode, warmup,
repeats). Smoke = warm-up 0, one repeat; benchmark = the target's threads and power mode with
the given warm-up and repeats. The device's exit status decides success.

Results: RUN/deploy/<target>/<device>.json (+ <device>/<smoke|benchmark>.{stdout,stderr}),
merged into report.json under `deploy.<target>.<device>`.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from toolkit.devices import open_transport
from toolkit.digest import hash_json, sha256_file
from toolkit.errors import ToolkitError
from toolkit.jobs import DeployJob
from toolkit.rundir import RunDir, atomic_write_json, read_json
from toolkit.targets import Target

RUNNER = "runtime/bin/ppocr_runner"
TEST_IMAGE = "test/image.jpg"


def checked_bundle(run: RunDir, target: Target) -> dict:
    """The bundle's manifest, after checking every file against it: a damaged bundle never
    reaches a device. Also checks the run directory can take the deploy records, before any
    device is touched (a finished switch must never be reported as a failure)."""
    bundle = run.bundle_dir(target.name)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.exists():
        raise ToolkitError(f"no bundle for {target.name} in {run.root}", hint=f"run `toolkit bundle --target {target.name} --run-dir {run.root}` first")
    manifest = read_json(manifest_path, "bundle manifest")
    bad = [rel for rel, digest in manifest.get("files", {}).items() if not (bundle / rel).is_file() or sha256_file(bundle / rel) != digest]
    if bad:
        raise ToolkitError(f"the {target.name} bundle is damaged: {len(bad)} file(s) differ from its manifest, e.g. {bad[0]}",
                           hint=f"rebuild it: `toolkit convert` and `toolkit bundle --target {target.name} --run-dir {run.root}`")
    records = run.deploy_dir(target.name)
    try:
        records.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"{records}: cannot record the deploy ({exc.strerror})", hint="make the run directory writable; nothing was sent") from None
    if not os.access(records, os.W_OK):
        raise ToolkitError(f"{records}: the run directory is not writable", hint="make it writable (deploy records go there); nothing was sent")
    return manifest


def deploy(job: DeployJob, run: RunDir) -> dict:
    """One device; a failure is raised as a ToolkitError (the result is still saved in the run)."""
    checked_bundle(run, job.target)
    res = deploy_one(job, run)
    _merge_report(run)
    if res["status"] != "ok":
        raise ToolkitError(res["error"], hint=res.get("hint"))
    return res


def deploy_devices(job: DeployJob, devices: list[str], run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Several devices in parallel; every device gets a result row, failures included.

    {"target", "ok", "devices": [per-device result]}; with one device, its result's fields are
    at the top level too (release, sent, unchanged, ...)."""
    if not devices:
        raise ToolkitError("no device to deploy to", hint="pass --device SPEC, --serial SERIAL or --all-devices")
    checked_bundle(run, job.target)
    jobs = [job.model_copy(update={"device": d}) for d in dict.fromkeys(devices)]
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        results = list(pool.map(lambda j: deploy_one(j, run, log), jobs))
    _merge_report(run)
    out = {"target": job.target.name, "ok": all(r["status"] == "ok" for r in results), "devices": results}
    # One device: its fields also at the top level, as `toolkit deploy --json` printed them before several devices.
    return {**results[0], **out} if len(results) == 1 else out


def deploy_one(job: DeployJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Never raises for a device problem: returns {"status": "failed", "error", "hint", ...}."""
    t0 = time.monotonic()
    res: dict = {"target": job.target.name, "device": job.device, "status": "failed"}
    transport = None
    try:
        transport = open_transport(job.device, **job.ssh.model_dump())
        res["device"] = transport.name
        res.update(_install(job, run, transport, res, log))
        for kind, wanted in (("smoke", job.smoke), ("benchmark", job.benchmark)):
            if wanted:
                if log:
                    log(f"{transport.name}: {kind} run")
                res[kind] = _run_runner(job, run, transport, kind)
                if not res[kind]["ok"]:
                    rc = res[kind]["returncode"]
                    how = f"failed on the device (exit status {rc})" if rc != 0 else "gave no result"
                    raise ToolkitError(f"{transport.name}: {kind} run {how}: {res[kind]['message']}",
                                       hint=f"its output is in {run.deploy_dir(job.target.name)}")
        if job.verify is not None:
            _verify(job, run, transport, res, log)
        res["status"] = "ok"
    except ToolkitError as exc:
        res.update(error=exc.message, hint=exc.hint)
    except OSError as exc:  # the client binary itself failed to start, a local file vanished...
        client = {"adb": "the adb client (apt-get install adb)", "ssh": "the OpenSSH client (apt-get install openssh-client)"}.get(
            job.device.split(":", 1)[0], "the local folder standing in for the device")
        res.update(error=f"{res['device']}: {exc.strerror or exc}", hint=f"check {client}")
    finally:
        if transport is not None:
            transport.close()
    res["seconds"] = round(time.monotonic() - t0, 2)
    try:
        atomic_write_json(run.deploy_record(job.target.name, _slug(res["device"])), res)
    except ToolkitError as exc:  # the device is already switched: say so, do not turn it into a failure
        res["record_error"] = exc.message
    return res


def _install(job: DeployJob, run: RunDir, transport, res: dict, log) -> dict:
    bundle = run.bundle_dir(job.target.name)
    manifest = read_json(bundle / "manifest.json", "bundle manifest")
    root = transport.root(job.target.transport.device_dir)
    facts = transport.facts(root)
    res["facts"] = facts
    abis = facts.get("abis") or ([facts["abi"]] if facts.get("abi") else [])
    if abis and not set(abis) & set(job.target.accepted_abis):
        raise ToolkitError(f"{transport.name}: reports ABI {facts.get('abi')} (supports {', '.join(abis)}); "
                           f"target {job.target.name} needs one of {', '.join(job.target.accepted_abis)}",
                           hint="deploy the target that matches the device (`toolkit devices` shows which one)")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    if facts.get("free_bytes") is not None and facts["free_bytes"] < size:
        raise ToolkitError(f"{transport.name}: {facts['free_bytes'] / 1e6:.1f} MB free at {root}, the bundle needs {size / 1e6:.1f} MB",
                           hint="free space on the device")
    current = transport.current_manifest(root) or {}
    reuse = {f for f, h in manifest["files"].items() if current.get("files", {}).get(f) == h}
    release = _release_id(manifest)
    if log:
        log(f"{transport.name}: installing release {release} ({len(manifest['files']) + 1 - len(reuse)} files to send)")
    try:
        result = transport.install(bundle, root, release, reuse)
    except OSError as exc:
        prev = _release_id(current) if current else "none"
        raise ToolkitError(f"deploy to {transport.name} failed: {exc.strerror or exc}",
                           hint=f"nothing was switched: the device still runs release {prev}; fix the cause and re-run") from None
    return {"target": job.target.name, "device": transport.name, "release": release, "bytes": size, **result,
            "previous_release": _release_id(current) if current else None}


def _verify(job: DeployJob, run: RunDir, transport, res: dict, log) -> None:
    """The device against the host's fake-quant model on the run's eval samples; the figures are
    recorded even when they miss the tolerances (then the deploy fails)."""
    from toolkit.jobs import TASKS, VerifyJob
    from toolkit.models.sources import resolve_source
    from toolkit.stages.verify import VerifyFailed, verify

    state = run.state()
    tasks = [t for t in TASKS if t in state.get("sources", {})]
    sources = {t: resolve_source(t, state["sources"][t]["spec"], tuple(state["sources"][t]["overrides"])) for t in tasks}
    vjob = VerifyJob(target=job.target, sources=sources, datasets=[Path(p) for p in state.get("datasets", [])], tasks=tasks,
                     **job.verify.model_dump())
    try:
        res["verify"] = verify(vjob, run, transport, run.deploy_outputs(job.target.name, _slug(transport.name)) / "verify", log)
    except VerifyFailed as exc:
        res["verify"] = exc.result
        raise


def runner_argv(threads: int, power_mode: str, warmup: int, repeats: int) -> list[str]:
    return [RUNNER, "--config", "config.json", "--image", TEST_IMAGE, "--threads", str(threads),
            "--power-mode", power_mode, "--warmup", str(warmup), "--repeats", str(repeats)]


def _run_runner(job: DeployJob, run: RunDir, transport, kind: str) -> dict:
    bundle = run.bundle_dir(job.target.name)
    for need, why in ((RUNNER, "no runtime (runtime/bin/ppocr_runner): build the target's runtime, then `toolkit bundle` again"),
                      (TEST_IMAGE, "no test image: bundle with a dataset")):
        if not (bundle / need).is_file():
            raise ToolkitError(f"the {job.target.name} bundle has {why.split(':')[0]}", hint=why.split(": ", 1)[1])
    d = job.target.defaults
    warmup, repeats = (0, 1) if kind == "smoke" else (job.warmup, job.repeats)
    argv = runner_argv(d.threads, d.power_mode, warmup, repeats)
    t0 = time.monotonic()
    r = transport.run(argv, cwd=f"{transport.root(job.target.transport.device_dir)}/current", env={"LD_LIBRARY_PATH": "runtime/lib"})
    seconds = round(time.monotonic() - t0, 2)
    out_dir = run.deploy_outputs(job.target.name, _slug(transport.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{kind}.stdout").write_text(r.stdout)
    (out_dir / f"{kind}.stderr").write_text(r.stderr)
    entry: dict = {"ok": False, "returncode": r.returncode, "seconds": seconds, "command": argv}
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode != 0:
        tail = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or lines[-1:] or ["(no output)"]
        return {**entry, "message": tail[0][:300]}
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError
    except (IndexError, ValueError):
        return {**entry, "message": "the runner's last output line is not a JSON object"}
    return {**entry, "ok": True, "message": "", "result": result}


def _slug(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", device).strip("_") or "device"


def _release_id(manifest: dict) -> str:
    """Content-addressed release name: the same bundle content always gets the same id."""
    return hash_json(manifest.get("files", {}))[:16]


def _merge_report(run: RunDir) -> None:
    from toolkit.report.summary import merge_deploy_results

    merge_deploy_results(run)


def check_spec(spec: str) -> str:
    """A device spec's form, checked before any work starts (`toolkit run --deploy`)."""
    kind, _, rest = spec.partition(":")
    if kind not in ("dir", "adb", "ssh") or not rest:
        raise ToolkitError(f"unsupported device '{spec}'", hint="use dir:PATH, adb:SERIAL or ssh:user@host[:port]")
    return spec


def resolve_devices(target: Target, devices: list[str], serials: list[str], all_devices: bool) -> list[str]:
    """--device SPEC (any transport), --serial S (the target's transport), --all-devices (adb: every device online)."""
    out = list(devices)
    out += [f"{target.transport.kind}:{s}" for s in serials]
    if all_devices:
        if target.transport.kind != "adb":
            raise ToolkitError(f"--all-devices lists adb devices; {target.name} deploys over {target.transport.kind}",
                               hint="name each board: --device ssh:user@host")
        from toolkit.devices.adb import adb_devices

        online = [f"adb:{d['serial']}" for d in adb_devices() if d["state"] == "device"]
        if not online:
            raise ToolkitError("no adb device is online", hint="`adb devices -l`; `adb connect HOST:PORT` for a network device")
        out += online
    return list(dict.fromkeys(out))


def list_devices(targets: list[Target], extra: list[str] | None = None, ssh: dict | None = None) -> list[dict]:
    """Connected adb devices (plus any named specs), their ABIs and the targets that accept them."""
    from toolkit.devices.adb import AdbTransport, adb_devices

    try:
        listed = [(f"adb:{d['serial']}", d) for d in adb_devices()]
    except (ToolkitError, OSError) as exc:
        if not extra:
            raise ToolkitError(f"cannot list adb devices: {getattr(exc, 'message', None) or exc}",
                               hint="install adb (apt-get install adb) or set TOOLKIT_ADB; ssh boards: --device ssh:user@host") from None
        listed = []  # no adb client: the ssh/dir devices named are still probed
    specs = listed + [(s, {}) for s in (extra or [])]

    def probe(item):
        spec, info = item
        row = {"device": spec, "state": info.get("state", "?"), "model": info.get("model"), "abi": None, "abis": [], "targets": []}
        if info and info.get("state") != "device":
            return row
        t = None
        try:
            t = AdbTransport(spec[4:]) if spec.startswith("adb:") else open_transport(spec, **(ssh or {}))
            facts = t.facts()
            row.update(state="device", abi=facts.get("abi"), abis=facts.get("abis") or [])
            row["model"] = row["model"] or facts.get("model")
            kind = spec.split(":", 1)[0]
            row["targets"] = [tg.name for tg in targets if tg.transport.kind == kind and set(row["abis"]) & set(tg.accepted_abis)]
        except ToolkitError as exc:
            row.update(state="error", error=exc.message)
        finally:
            if t is not None:
                t.close()
        return row

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(probe, specs))
    return rows
