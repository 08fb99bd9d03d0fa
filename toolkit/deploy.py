"""Stage 6: deliver a target's bundle to a device, atomically, skipping unchanged files."""

from __future__ import annotations

import json
from dataclasses import dataclass

from toolkit.errors import ToolkitError
from toolkit.rundir import RunDir
from toolkit.targets import Target
from toolkit.transports import open_transport


@dataclass
class DeployJob:
    target: Target
    device: str


def deploy(job: DeployJob, run: RunDir) -> dict:
    """Check the device against the target, then install bundle/<target>/ as a new release."""
    bundle = run.bundle_dir(job.target.name)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.exists():
        raise ToolkitError(f"no bundle for {job.target.name} in {run.root}", hint=f"run `toolkit bundle --target {job.target.name} --run-dir {run.root}` first")
    manifest = json.loads(manifest_path.read_text())
    transport = open_transport(job.device)
    facts = transport.facts()
    if facts.get("abi") is not None and facts["abi"] not in job.target.accepted_abis:
        raise ToolkitError(f"{transport.name} reports ABI {facts['abi']}, target {job.target.name} needs one of {', '.join(job.target.accepted_abis)}",
                           hint="pick the target that matches the device (`toolkit targets list`)")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    if facts.get("free_bytes") is not None and facts["free_bytes"] < size:
        raise ToolkitError(f"{transport.name} has {facts['free_bytes']} bytes free, the bundle needs {size}", hint="free space on the device")
    root = job.target.transport.device_dir
    current = transport.current_manifest(root) or {}
    reuse = {f for f, h in manifest["files"].items() if current.get("files", {}).get(f) == h}
    release = _release_id(manifest)
    try:
        result = transport.install(bundle, root, release, reuse)
    except OSError as exc:
        prev = _release_id(current) if current else "none"
        raise ToolkitError(f"deploy to {transport.name} failed: {exc.strerror or exc}",
                           hint=f"nothing was switched: the device still runs release {prev}; fix the cause and re-run") from None
    return {"target": job.target.name, "device": transport.name, "release": release, "bytes": size, **result,
            "previous_release": _release_id(current) if current else None}


def _release_id(manifest: dict) -> str:
    """Content-addressed release name: the same bundle content always gets the same id."""
    import hashlib

    files = manifest.get("files", {})
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
