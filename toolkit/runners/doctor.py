"""`toolkit doctor`: what this machine has for each runner, and the fix for what is missing.

Each check is {name, ok, detail, fix}; `ok` is None where a thing is optional and absent
(GPUs on a CPU machine). Nothing here changes the machine.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from toolkit.targets import Target


def _check(name: str, ok: bool | None, detail: str, fix: str = "") -> dict:
    return {"name": name, "ok": ok, "detail": detail, "fix": fix if ok is False else ""}


def _run(argv: list[str]) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout or r.stderr).strip() if r.returncode == 0 else None


def checks(targets: list[Target]) -> list[dict]:
    from toolkit.runners import images
    from toolkit.stages.bundle import runtime_dir
    from toolkit.runners.envs import converter_dir, find_python
    from toolkit.errors import ToolkitError

    out: list[dict] = []
    # Docker engine ---------------------------------------------------------
    client = None
    try:
        client = images.engine(timeout=10)
        v = client.version()
        out.append(_check("docker engine", True, f"Docker {v.get('Version')} (API {v.get('ApiVersion')}) answers"))
    except ToolkitError as exc:
        out.append(_check("docker engine", False, exc.message,
                          "Debian/Ubuntu: `apt-get install docker.io` then `systemctl start docker` (or `dockerd &` as root); "
                          "or use --runner local"))
    # GPUs --------------------------------------------------------------------
    host_gpus = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    smi = _run(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else None
    gpu_detail = f"{len(smi.splitlines())} GPU(s): {smi.splitlines()[0]}" if smi else (f"{len(host_gpus)} NVIDIA device node(s)" if host_gpus else "no NVIDIA GPU")
    out.append(_check("host GPUs", True if (smi or host_gpus) else None, gpu_detail))
    if client is not None:
        from toolkit.runners.docker import gpu_status

        st = gpu_status(client)
        if st["nvidia_runtime"]:
            out.append(_check("docker NVIDIA runtime", True, f"runtimes: {', '.join(st['runtimes'])}"))
        else:
            need = bool(smi or host_gpus)
            out.append(_check("docker NVIDIA runtime", False if need else None, f"runtimes: {', '.join(st['runtimes'])}" +
                              ("" if need else " (no GPU here: trainer containers run on CPU)"),
                              "install nvidia-container-toolkit, `nvidia-ctk runtime configure --runtime=docker`, restart dockerd"))
    # adb -------------------------------------------------------------------------
    adb = shutil.which("adb")
    ver = _run([adb, "version"]) if adb else None
    out.append(_check("adb", bool(ver), (ver.splitlines()[0] if ver else "adb not found on PATH"),
                      "apt-get install adb (Android platform-tools), needed to deploy to android-* targets"))
    # local trainer -----------------------------------------------------------------
    have_paddle = importlib.util.find_spec("paddle") is not None and importlib.util.find_spec("paddleslim") is not None
    out.append(_check("local trainer (paddle, paddleslim)", have_paddle, "importable in this Python" if have_paddle else "not installed here",
                      "`make setup` (pip install -e .), or use --runner docker"))
    # converter interpreters / environments ------------------------------------------------
    versions = {}
    for t in targets:
        versions.setdefault(t.lite.version, t)
    for lite, t in versions.items():
        py = find_python(t.lite.python)
        out.append(_check(f"Python {t.lite.python} (Paddle Lite {lite} opt)", py is not None, str(py) if py else "no interpreter found",
                          f"`pyenv install {t.lite.python}` (or your distribution's python{t.lite.python}), or use --runner docker"))
        d = converter_dir(lite)
        ready = (d / ".ready").exists()
        out.append(_check(f"converter env {lite}", ready, str(d) if ready else f"{d} not set up", "`toolkit setup`, or use --runner docker"))
    # images ------------------------------------------------------------------------
    if client is not None:
        base = images.image_exists(client, images.BASE_NAME)
        deb = shutil.which("debootstrap")
        out.append(_check("base image", base or None if deb else base, images.BASE_NAME + (" present" if base else " not made yet") +
                          ("" if base or deb else "; debootstrap missing"),
                          "apt-get install debootstrap (made on the first `toolkit images build`), or pass --base-image"))
        wanted = [(f"{images.TRAINER}:cpu", "trainer image (CPU)", "toolkit images build --kind trainer")]
        wanted += [(f"{images.CONVERTER}:{lite}", f"converter image {lite}", "toolkit images build --kind converter") for lite in versions]
        for ref, name, fix in wanted:
            ok = images.image_exists(client, ref)
            out.append(_check(name, ok, ref + (" present" if ok else " not built"), f"`{fix}`"))
    for t in targets:
        out.append(_runtime_check(t, runtime_dir(t)))
    return out


def _runtime_check(t: Target, rt: Path) -> dict:
    """A built runtime, with what BUILD-INFO.json says it was built from; else how to build it."""
    import json

    if (rt / "bin").is_dir():
        try:
            info = json.loads((rt / "BUILD-INFO.json").read_text())
            lite = info.get("lite", {})
            what = f"Paddle Lite {lite.get('tag', '')} {lite.get('commit', '')[:10]} from source" if lite.get("kind") == "source" else "release archive"
            what += f"; the device needs {info['device_needs']}" if info.get("device_needs") else ""
        except (OSError, ValueError):
            what = "no BUILD-INFO.json"
        return _check(f"runtime {t.name}", True, f"{rt} built ({what})")
    src = t.runtime
    needs = (["the Paddle Lite repository (or --lite-source DIR, a local clone)"] if src.kind == "source" else ["the Paddle Lite archive"])
    needs += ["OpenCV's and Clipper's sources"] + (["the Android NDK"] if src.toolchain.kind == "ndk" else [])
    fix = f"`toolkit images build --kind runtime --target {t.name}` (downloads {', '.join(needs)}; checked against targets/{t.name}.yaml)"
    return _check(f"runtime {t.name}", False, f"{rt} not built: bundles go without a runner", fix)


def render(rows: list[dict]) -> str:
    mark = {True: "ok  ", False: "MISS", None: "--  "}
    lines = []
    for r in rows:
        lines.append(f"{mark[r['ok']]}  {r['name']:<36} {r['detail']}")
        if r["fix"]:
            lines.append(f"      fix: {r['fix']}")
    missing = [r["name"] for r in rows if r["ok"] is False]
    lines.append(f"{len(missing)} missing" + (f": {', '.join(missing)}" if missing else ""))
    return "\n".join(lines)


def checks_for(names: list[str] | None) -> list[dict]:
    """`checks` for the named targets (default: every file in targets/); a target file that does
    not load is a row of its own, not the end of the report."""
    from toolkit.errors import ToolkitError
    from toolkit.targets import load_target, resolve_targets_dir

    loaded, broken = [], []
    files = [resolve_targets_dir() / f"{n}.yaml" for n in names] if names else sorted(resolve_targets_dir().glob("*.yaml"))
    for f in files:
        try:
            loaded.append(load_target(f))
        except ToolkitError as exc:
            broken.append(_check(f"target {f.stem}", False, exc.message.splitlines()[0], exc.hint or "fix the file"))
    return broken + checks(loaded)
