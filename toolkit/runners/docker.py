"""Where the stages run: locally (this Python, the converter venv) or in Docker containers.

Runner.quantize/export/evaluate/convert take the same jobs as the stage functions and return
the same results, so `toolkit run` dispatches on a runner and nothing else changes.

The Docker runner:
- trainer stages run `python -m toolkit.runners.worker RUN NAME` in the trainer image (the GPU
  variant with GPUs passed through for --device gpu, when the engine has the NVIDIA runtime; a
  clear error otherwise): the job goes in as RUN/jobs/NAME.job.json, the result comes back as
  RUN/jobs/NAME.result.json; nothing is read from the container's output but log lines;
- convert runs on the host as usual, but the converter programs it calls (paddle_lite_opt, the
  converter's python) are stand-ins that run them in the converter image (envs.CONVERTER_OVERRIDE);
- every host path a stage needs (run dir, data, model sources, the toolkit source, targets) is
  bind-mounted at the same absolute path, so no path is translated; containers run as the
  calling user's uid:gid with HOME=/tmp/home, so what they write belongs to that user.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError
from toolkit.runners import envs
from toolkit.runners.jobfiles import read_result, write_job
from toolkit.share import PACKAGE as PKG_DIR

Log = Callable[[str], None]


# ------------------------------------------------------------------ GPUs
def gpu_status(client) -> dict:
    """What the engine and the host offer for GPUs; never assumed, always detected."""
    info = client.info()
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    devices = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    return {"nvidia_runtime": "nvidia" in runtimes, "runtimes": runtimes, "default_runtime": info.get("DefaultRuntime"),
            "host_gpus": devices}


def gpu_requests(client, want: bool) -> list:
    """device_requests for the container: all GPUs when asked for and available, else a clear error."""
    if not want:
        return []
    import docker

    st = gpu_status(client)
    if not st["nvidia_runtime"] or not st["host_gpus"]:
        missing = [m for m, ok in (("no NVIDIA GPU on this host (/dev/nvidia*)", st["host_gpus"]),
                                   ("the Docker engine has no NVIDIA runtime", st["nvidia_runtime"])) if not ok]
        raise ToolkitError(f"GPUs were requested (--device gpu) but {' and '.join(missing)}",
                           hint="install the NVIDIA driver and nvidia-container-toolkit (`nvidia-ctk runtime configure --runtime=docker`, "
                                "restart dockerd), or train on CPU with --device cpu")
    return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]


# ------------------------------------------------------------------ mounts
def mounts_for(paths: list[Path | str], rw: list[Path | str]) -> dict:
    """Bind mounts at the same absolute path: read-only for `paths`, read-write for `rw`.
    A path inside another mounted one with the same (or a weaker) mode is left out."""
    want: dict[str, str] = {}
    for mode, group in (("ro", paths), ("rw", rw)):
        for p in group:
            p = Path(p).resolve()
            if not p.exists():
                continue
            if mode == "rw" or want.get(str(p)) != "rw":
                want[str(p)] = mode
    out = {}
    for p in sorted(want, key=len):
        covered = any(p.startswith(q.rstrip("/") + "/") and (want[q] == "rw" or want[p] == "ro") for q in out)
        if not covered:
            out[p] = {"bind": p, "mode": want[p]}
    return out


def _code_mounts() -> list[Path]:
    """The toolkit package and the targets folder the host uses."""
    from toolkit.targets import resolve_targets_dir

    return [PKG_DIR, resolve_targets_dir()]


def run_container(client, image: str, argv: list[str], mounts: dict, log: Log, user: str | None = None, env: dict | None = None,
                  workdir: str | None = None, device_requests: list | None = None, what: str = "", host_net: bool = False) -> tuple[int, str, str]:
    """Run argv in `image`; stderr streamed to `log` line by line; returns (exit code, stdout, stderr tail)."""
    import docker

    user = user or f"{os.getuid()}:{os.getgid()}"
    environment = {"HOME": "/tmp/home", "PYTHONPATH": str(PKG_DIR.parent), "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        c = client.containers.create(image, command=argv, user=user, environment=environment, volumes=mounts,
                                     working_dir=workdir or "/tmp/home", device_requests=device_requests or None,
                                     network_disabled=False, labels={"org.toolkit.stage": what or argv[0]},
                                     **({"network_mode": "host", "ipc_mode": "host"} if host_net else {}))  # distributed QAT
    except docker.errors.ImageNotFound:
        raise ToolkitError(f"image {image} is not in the local engine", hint="run `toolkit images build`") from None
    except docker.errors.APIError as exc:
        raise ToolkitError(f"could not create a container from {image}: {exc.explanation or exc}") from None
    err_lines: list[str] = []
    try:
        c.start()

        def pump():
            buf = b""
            for chunk in c.logs(stream=True, follow=True, stdout=False, stderr=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace").rstrip()
                    err_lines.append(text)
                    if text.strip():
                        log(text)
            if buf.strip():
                err_lines.append(buf.decode(errors="replace"))
                log(buf.decode(errors="replace"))

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        code = c.wait().get("StatusCode", 1)
        t.join(timeout=10)
        out = c.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        try:
            c.remove(force=True)
        except Exception:
            pass
    return code, out, "\n".join(err_lines[-12:])


# ------------------------------------------------------------------ docker runner
class DockerRunner:
    """Each stage in its container; see the module docstring."""

    name = "docker"

    def __init__(self, log: Log | None = None, user: str | None = None, build_options=None):
        from toolkit.runners.images import engine

        self.client = engine()
        self.log = log or (lambda _msg: None)
        self.user = user
        self.build_options = build_options
        self._images: dict[str, str] = {}

    # images -------------------------------------------------------------
    def image(self, kind: str, variant: str, target=None) -> str:
        """The newest build of this image (`toolkit images build`), built now when there is none."""
        from toolkit.runners import images

        key = f"{kind}:{variant}"
        if key in self._images:
            return self._images[key]
        repo = images.TRAINER if kind == "trainer" else images.CONVERTER
        alias = f"{repo}:{variant}"
        if not images.image_exists(self.client, alias):
            self.log(f"runner docker: no {alias} image yet, building it")
            opts = self.build_options or images.BuildOptions()
            res = images.build_images([target] if target else [], [kind], opts, trainer_variants=[variant], log=self.log, client=self.client)
            alias = res[0]["tag"]
        self._images[key] = alias
        return alias

    # trainer stages -----------------------------------------------------
    def _stage(self, stage: str, job, run, paths: list[Path], log: Log | None, gpu: bool = False, host_net: bool = False) -> dict:
        """Run one stage in the trainer container: job.json in, result.json out (toolkit/runners/worker.py)."""
        log = log or self.log
        devices = gpu_requests(self.client, gpu)  # GPUs asked for but absent: say so before any image work
        image = self.image("trainer", "gpu" if gpu else "cpu")
        name, result_file = write_job(run, stage, job)
        ro = _code_mounts() + [Path(p) if Path(p).is_dir() else Path(p).parent for p in paths if not str(p).startswith(sys.prefix)]
        env = {k: os.environ[k] for k in ("TOOLKIT_TARGETS_DIR", "TOOLKIT_NODE_RANK") if os.environ.get(k)}
        log(f"runner docker: {image}: {stage} ({name})")
        code, _, tail = run_container(self.client, image, ["python", "-m", "toolkit.runners.worker", str(run.root), name],
                                      mounts_for(ro, [run.root]), log=log, user=self.user, env=env, workdir=str(run.root),
                                      device_requests=devices, what=name, host_net=host_net)
        return read_result(result_file, name, f"the trainer container {image}", code, tail)

    @staticmethod
    def _source_paths(*sources) -> list[Path]:
        return [p for s in sources for p in (s.config, s.inference_dir, s.checkpoint) if p is not None]

    def quantize(self, job, run, progress=None, log=None):
        # Data-parallel QAT: paddle.distributed.launch runs inside the container, on the host's network.
        return self._stage("quantize", job, run, self._source_paths(job.source) + list(job.datasets), log,
                           gpu=job.options.device == "gpu", host_net=job.dist is not None)

    def export(self, job, run, log=None):
        return self._stage("export", job, run, self._source_paths(job.source), log)

    def evaluate(self, job, run, log=None, progress=None):  # the container prints its own progress lines
        return self._stage("evaluate", job, run, self._source_paths(*job.sources.values()) + list(job.datasets), log)

    # converter -----------------------------------------------------------
    def converter_shims(self, target) -> Path:
        """A folder of stand-ins for the converter venv's programs that run them in the converter image."""
        image = self.image("converter", target.lite.version, target)
        d = envs.toolkit_home() / "docker-shims" / target.lite.version
        d.mkdir(parents=True, exist_ok=True)
        for name in ("paddle_lite_opt", "python"):
            p = d / name
            p.write_text(f"#!{sys.executable}\n# Written by toolkit/runners.py: runs {name} in the converter image.\n"
                         f"import sys\nsys.path.insert(0, {str(PKG_DIR.parent)!r})\nfrom toolkit.runners.docker import shim_main\n"
                         f"sys.exit(shim_main({image!r}, {name!r}, sys.argv[1:], {self.user!r}))\n")
            p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return d

    def convert(self, job, run, log=None):
        from toolkit.stages.convert import convert

        saved = dict(envs.CONVERTER_OVERRIDE)
        try:
            for t in job.targets:
                envs.CONVERTER_OVERRIDE[t.lite.version] = self.converter_shims(t)
            return convert(job, run, log)
        finally:
            envs.CONVERTER_OVERRIDE.clear()
            envs.CONVERTER_OVERRIDE.update(saved)


def shim_main(image: str, program: str, args: list[str], user: str | None = None) -> int:
    """Entry of a converter stand-in: run `program args` in `image`, paths mounted as they are."""
    from toolkit.runners.images import engine

    try:
        client = engine(timeout=300)
        paths: list[Path] = []
        for a in args:
            value = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
            if value.startswith("/"):
                p = Path(value)
                paths.append(p if p.is_dir() else p.parent)
        argv = [program if program != "python" else "python", *args]
        code, out, tail = run_container(client, image, argv, mounts_for([PKG_DIR], paths), log=lambda m: print(m, file=sys.stderr),
                                        user=user, workdir="/tmp/home", what=f"converter:{program}")
        sys.stdout.write(out)
        return code
    except ToolkitError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
