"""Devices: `toolkit deploy` (install a bundle atomically, optionally smoke-run or benchmark it)
and `toolkit devices` (what is connected, its ABI, the targets that accept it)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from toolkit.cli.app import DEFAULT_TARGET, JSON, RUN_DIR, UI, app, done_with_problems, emit, table
from toolkit.cli.stages import opened

SSH = {
    "key": typer.Option(None, "--ssh-key", help="ssh: private key file (key authentication only; or TOOLKIT_SSH_KEY)."),
    "known_hosts": typer.Option(None, "--known-hosts", help="ssh: known_hosts file to check host keys against (or TOOLKIT_SSH_KNOWN_HOSTS)."),
    "accept_new": typer.Option(False, "--accept-new-host-keys", help="ssh: trust and record a host key seen for the first time."),
}


def _ssh(key: Optional[Path], known_hosts: Optional[Path], accept_new: bool):
    from toolkit.jobs import SshOptions

    return SshOptions(identity=str(key) if key else None, known_hosts=str(known_hosts) if known_hosts else None, accept_new_host_keys=accept_new)


@app.command()
def deploy(target: str = typer.Option(DEFAULT_TARGET, "--target"),
           device: Optional[List[str]] = typer.Option(None, "--device", help="adb:SERIAL, ssh:user@host[:port] or dir:PATH; repeat for several."),
           serial: Optional[List[str]] = typer.Option(None, "--serial", help="A device serial (adb) or user@host[:port] (ssh) for the target's transport."),
           all_devices: bool = typer.Option(False, "--all-devices", help="Every adb device online."),
           smoke: bool = typer.Option(False, "--smoke", help="After installing, run the bundle's smoke command on the device."),
           bench: bool = typer.Option(False, "--bench", help="After installing, benchmark with the target's threads and power mode."),
           warmup: int = typer.Option(2, "--warmup", min=0), repeats: int = typer.Option(10, "--repeats", min=1),
           verify: bool = typer.Option(False, "--verify", help="After installing, run eval samples through the bundle's runner on the device and "
                                       "compare with the host's fake-quant model; fails when det map cosine < --verify-det-cosine or rec lines "
                                       "identical < --verify-rec-identical."),
           verify_samples: str = typer.Option("20,100,5", "--verify-samples", help="DET_IMAGES,REC_LINES,PAGES to verify (under qemu about 4,24,1)."),
           verify_det_cosine: float = typer.Option(0.995, "--verify-det-cosine", min=0, max=1),
           verify_rec_identical: float = typer.Option(0.98, "--verify-rec-identical", min=0, max=1),
           ssh_key: Optional[Path] = SSH["key"], known_hosts: Optional[Path] = SSH["known_hosts"],
           accept_new_host_keys: bool = SSH["accept_new"], run_dir: Path = RUN_DIR, as_json: bool = JSON):
    """Install the target's bundle on devices atomically (the previous one keeps working on failure), in parallel."""
    from toolkit.jobs import DeployJob, VerifyOptions
    from toolkit.stages.deploy import deploy_devices, resolve_devices
    from toolkit.targets import get_target

    ui = UI(as_json)
    t = get_target(target)
    with opened(run_dir) as run:
        found = resolve_devices(t, device or [], serial or [], all_devices)
        job = DeployJob(target=t, device="", smoke=smoke, benchmark=bench, warmup=warmup, repeats=repeats,
                        ssh=_ssh(ssh_key, known_hosts, accept_new_host_keys),
                        verify=VerifyOptions.from_flags(verify_samples, verify_det_cosine, verify_rec_identical) if verify else None)
        res = deploy_devices(job, found, run, ui.log)
    emit(res, as_json, _deploy_table(res))
    failed = [r for r in res["devices"] if r["status"] != "ok"]
    if failed:
        done_with_problems(f"deploy failed on {len(failed)} of {len(res['devices'])} device(s): {failed[0]['error']}",
                           failed[0].get("hint") or "see the table above")


def _deploy_table(res: dict) -> str:
    rows = [("device", "status", "release", "sent", "unchanged", "smoke", "bench total ms", "verify", "")]
    for r in res["devices"]:
        bench = (r.get("benchmark") or {}).get("result", {}).get("timings_ms", {}).get("total")
        smoke = r.get("smoke")
        rows.append((r["device"], r["status"], r.get("release") or "-", str(r.get("sent", "-")), str(r.get("unchanged", "-")),
                     "-" if smoke is None else ("ok" if smoke["ok"] else f"exit {smoke['returncode']}" if smoke["returncode"] else "no result"),
                     "-" if bench is None else f"{bench:.1f}", _verify_cell(r.get("verify")),
                     (r.get("error") or r.get("record_error") or "").removeprefix(f"{r['device']}: ")[:90]))
    return table(rows)


def _verify_cell(v: dict | None) -> str:
    if not v:
        return "-"
    if v.get("standin"):
        return "stand-in"
    det, rec, pages = v.get("det") or {}, v.get("rec") or {}, v.get("pipeline") or {}
    return ", ".join(x for x in (f"det cos {det['cosine_min']:.4f}" if det.get("cosine_min") is not None else "",
                                 f"rec {100 * rec['identical']:.0f}% same" if rec.get("identical") is not None else "",
                                 f"pages {100 * pages['identical']:.1f}% same" if pages.get("identical") is not None else "") if x) or "-"


@app.command()
def devices(device: Optional[List[str]] = typer.Option(None, "--device", help="Also probe these (ssh:user@host[:port], adb:SERIAL)."),
            ssh_key: Optional[Path] = SSH["key"], known_hosts: Optional[Path] = SSH["known_hosts"],
            accept_new_host_keys: bool = SSH["accept_new"], as_json: bool = JSON):
    """Connected adb devices (and any --device named), their ABIs and the targets that accept them."""
    from toolkit.stages.deploy import list_devices
    from toolkit.targets import list_targets

    rows = list_devices(list_targets(), device or [], _ssh(ssh_key, known_hosts, accept_new_host_keys).model_dump())
    shown = [("device", "state", "model", "abi", "targets")] + [
        (r["device"], r["state"], r.get("model") or "-", ",".join(r["abis"]) or "-", ",".join(r["targets"]) or r.get("error", "none")) for r in rows]
    emit(rows, as_json, table(shown) if rows else "no devices")
