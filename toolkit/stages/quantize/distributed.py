"""Data-parallel and multi-node QAT on Paddle's own launcher, `python -m paddle.distributed.launch`.

The `toolkit quantize --devices 0,1,2,3` (GPUs) or `--nproc N` (CPU processes, gloo backend)
process is the parent: it runs the pre-training float-fallback search once (search.json, which
every rank reads), writes the job to quant/<task>/dist_job.json, and starts the launcher in
collective mode with `-m toolkit.stages.quantize.distributed <job json>` as each rank's program; with
`--nodes host1,host2 --master host1:port` each node runs the same command and its launcher
joins the others through the master. Each rank runs the one QAT loop, quantize.run_qat, with
its rank and the world size: the model in paddle.DataParallel, its slice of the step's global
batch (the batch a single process draws for that step), rank 0 alone writing checkpoints,
train_log.jsonl, the after-training search and qat.json. The logs of every rank are kept in
quant/<task>/dist_logs/workerlog.<local rank> (launcher.log: the launcher's own).

The parent follows rank 0's train_log.jsonl for progress. When a rank dies, the launcher stops
the others and exits; the parent names the rank, its log file and the log's last lines, and
points at `--resume`, which continues from rank 0's last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError

from toolkit.share import PACKAGE as PKG_DIR  # noqa: E402


# ------------------------------------------------------------------ the plan
def _per_node(dist: dict) -> int:
    if dist.get("devices"):
        return len([d for d in str(dist["devices"]).split(",") if d.strip()])
    return int(dist.get("nproc") or 1)


def world_size(dist: dict) -> int:
    """Ranks in the whole job: processes per node x nodes."""
    return _per_node(dist) * max(1, len(dist.get("nodes") or []))


def parse_options(devices: str | None, nproc: int | None, nodes: str | None, master: str | None, device: str) -> tuple[dict | None, str]:
    """The CLI flags as QuantJob.dist (None: one process) and the device the ranks use."""
    if devices is None and nproc is None and nodes is None and master is None:
        return None, device
    if devices is not None and nproc is not None:
        raise ToolkitError("--devices and --nproc both given", hint="--devices 0,1,... for GPUs, --nproc N for N CPU processes")
    dist: dict = {}
    if devices is not None:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        if not ids or not all(d.isdigit() for d in ids):
            raise ToolkitError(f"--devices {devices}: expected GPU ids like 0,1,2,3")
        device = "gpu"  # --devices names GPUs; --nproc N is for CPU processes
        dist["devices"] = ",".join(ids)
    else:
        if nproc is not None and nproc < 1:
            raise ToolkitError(f"--nproc {nproc}: expected 1 or more")
        dist["nproc"] = int(nproc or 1)
    if nodes is not None:
        hosts = [h.strip() for h in nodes.split(",") if h.strip()]
        if not hosts:
            raise ToolkitError(f"--nodes {nodes}: expected host1,host2,...")
        if not master or ":" not in master:
            raise ToolkitError("--nodes needs --master HOST:PORT", hint="e.g. --nodes host1,host2 --master host1:6170 (the same on every node)")
        dist["nodes"] = hosts
        dist["master"] = master
    elif master is not None:
        raise ToolkitError("--master without --nodes", hint="--nodes host1,host2 --master host1:PORT for several machines")
    return dist, device


def node_rank(dist: dict) -> int:
    """This machine's place in --nodes: $TOOLKIT_NODE_RANK, else its host name or an address of it."""
    hosts = dist["nodes"]
    if os.environ.get("TOOLKIT_NODE_RANK", "").strip():
        r = int(os.environ["TOOLKIT_NODE_RANK"])
        if not 0 <= r < len(hosts):
            raise ToolkitError(f"TOOLKIT_NODE_RANK={r} is outside --nodes ({len(hosts)} hosts)")
        return r
    names = {socket.gethostname(), socket.getfqdn()}
    addrs: set[str] = set()
    for n in names:
        try:
            addrs.update(socket.gethostbyname_ex(n)[2])
        except OSError:
            pass
    names |= addrs
    for i, h in enumerate(hosts):
        try:
            addr = socket.gethostbyname(h)
        except OSError:
            addr = None
        if h in names or h.split(".")[0] in {n.split(".")[0] for n in names} or (addr and addr in names and not addr.startswith("127.")):
            return i
    raise ToolkitError(f"this machine ({socket.gethostname()}) is not one of --nodes {','.join(hosts)}",
                       hint="list this host by the name or address the others reach it at, or set TOOLKIT_NODE_RANK")


def _job_json(job) -> dict:
    d = asdict(job)
    d["source"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(job.source).items()}
    d["data_dir"] = str(Path(job.data_dir).resolve())
    return d


def _job_from_json(d: dict):
    from toolkit.models.sources import ModelSource
    from toolkit.stages.quantize.stage import QuantJob

    s = dict(d["source"])
    for k in ("config", "inference_dir", "checkpoint"):
        s[k] = Path(s[k]) if s.get(k) is not None else None
    s["overrides"] = tuple(s.get("overrides") or ())
    return QuantJob(**{**d, "source": ModelSource(**s), "data_dir": Path(d["data_dir"])})


# ------------------------------------------------------------------ parent: launch and watch
def launcher_argv(dist: dict, log_dir: Path, job_file: Path, task: str) -> list[str]:
    argv = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir), "--job_id", f"toolkit-qat-{task}"]
    argv += ["--devices", dist["devices"]] if dist.get("devices") else ["--nproc_per_node", str(dist.get("nproc") or 1)]
    if dist.get("nodes"):
        argv += ["--nnodes", str(len(dist["nodes"])), "--master", dist["master"], "--rank", str(node_rank(dist))]
    # A non-.py program is run as given: each rank is `python -u -m toolkit.stages.quantize.distributed JOB`.
    return argv + [sys.executable, "-u", "-m", "toolkit.stages.quantize.distributed", str(job_file)]


def _tail(path: Path, n: int = 3) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keep = [ln.strip()[:200] for ln in lines if ln.strip() and not re.match(r"I\d{4} ", ln)]  # glog info lines
    return keep[-n:]


def _why(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _failure(job, world: int, code: int, log_dir: Path) -> ToolkitError:
    """The launcher ended with an error: which rank, why, its log and the way on."""
    from toolkit.stages.quantize.stage import _latest_checkpoint

    latest = _latest_checkpoint(Path(log_dir).parent / "ckpt")
    resume = (f"`--resume` continues from the last checkpoint (step {latest[0]})" if latest
              else "no checkpoint was written yet: re-run the command (`--resume` continues from a checkpoint once there is one)")
    launcher_log = log_dir / "launcher.log"
    text = launcher_log.read_text(errors="replace") if launcher_log.exists() else ""
    m = re.search(r"Container rank (\d+) status \S+ cmd .*? code (-?\d+) log (\S+)", text)
    if m:
        rank, rcode, wlog = int(m.group(1)), int(m.group(2)), Path(m.group(3))
        if not wlog.is_absolute():
            wlog = log_dir / wlog.name
        lines = _tail(wlog, 40)
        err = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
        hint = next((ln[len("hint: "):] for ln in reversed(lines) if ln.startswith("hint: ")), None)
        if err:
            return ToolkitError(f"QAT {job.task}, rank {rank} of {world}: {err} (log: {wlog})", hint=hint or resume)
        tail = "\n    ".join(lines[-3:]) or "(empty)"
        return ToolkitError(f"QAT {job.task}: rank {rank} of {world} stopped ({_why(rcode)}); the launcher ended the job.\n"
                            f"  log {wlog} ends with:\n    {tail}", hint=resume)
    tail = "\n    ".join(_tail(launcher_log)) or "(empty)"
    return ToolkitError(f"QAT {job.task}: paddle.distributed.launch ended with {_why(code)} (a rank on another node may have "
                        f"stopped; see its dist_logs).\n  {launcher_log} ends with:\n    {tail}", hint=resume)


def launch(job, run, progress: Callable[[int, int, float], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the QAT of `job` data-parallel through paddle.distributed.launch; returns rank 0's qat.json."""
    from toolkit.stages.quantize.stage import search_before_training
    from toolkit.rundir import atomic_write_json

    dist = job.dist or {}
    world = world_size(dist)
    qdir = run.quant_dir(job.task)
    qdir.mkdir(parents=True, exist_ok=True)
    search_before_training(job, run)  # once, here: the ranks read quant/<task>/search.json
    log_dir = qdir / "dist_logs"
    if not job.resume and log_dir.exists():
        for f in log_dir.iterdir():
            if f.is_file():
                f.unlink()
    log_dir.mkdir(parents=True, exist_ok=True)
    job_file = qdir / "dist_job.json"
    atomic_write_json(job_file, _job_json(job))
    (qdir / "qat.json").unlink(missing_ok=True)
    argv = launcher_argv(dist, log_dir, job_file, job.task)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(PKG_DIR.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    if job.device != "gpu":
        env["PADDLE_DISTRI_BACKEND"] = "gloo"  # CPU collectives
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _per_node(dist))))
    if log:
        where = f"{len(dist['nodes'])} nodes, this is node {node_rank(dist)}" if dist.get("nodes") else "1 node"
        log(f"QAT {job.task}: {world} ranks ({where}) through paddle.distributed.launch; logs in {log_dir}")
    steps_total = None
    train_log = qdir / "train_log.jsonl"
    seen = len(train_log.read_text().splitlines()) if job.resume and train_log.exists() else 0  # steps shown before
    with open(log_dir / "launcher.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(run.root), start_new_session=True)
        try:
            while True:
                code = proc.poll()
                if progress and train_log.exists():
                    lines = [ln for ln in train_log.read_text().splitlines() if ln.strip()]
                    if steps_total is None and job_file.exists():
                        steps_total = _steps(job)
                    for ln in lines[seen:]:
                        try:
                            rec = json.loads(ln)
                        except json.JSONDecodeError:
                            break
                        seen += 1
                        progress(int(rec["step"]), steps_total or int(rec["step"]), float(rec["loss"]))
                if code is not None:
                    break
                time.sleep(0.5)
        except BaseException:
            _stop(proc)
            raise
    if code != 0:
        raise _failure(job, world, code, log_dir)
    if not (qdir / "qat.json").exists():
        raise ToolkitError(f"QAT {job.task}: the ranks finished but rank 0 wrote no {qdir / 'qat.json'}",
                           hint=f"see {log_dir}/workerlog.0")
    info = json.loads((qdir / "qat.json").read_text())
    info["distributed"] = {"world_size": world, "logs": str(log_dir), **{k: v for k, v in dist.items()}}
    return info


def _steps(job) -> int | None:
    from toolkit.models.sources import load_config

    try:
        cfg = load_config(job.source.config, tuple(job.source.overrides))
        return int(job.settings(cfg)["steps"])
    except (OSError, KeyError, ValueError, TypeError, ToolkitError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    """Interrupted: stop the launcher (it stops its ranks), then the whole group if it lingers."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, OSError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


# ------------------------------------------------------------------ each rank
def worker(job_file: str) -> int:
    """One rank: set up paddle.distributed, run the QAT loop with this rank and the world size."""
    from toolkit.engine import paddle
    from toolkit.stages.quantize.stage import _set_device, run_qat
    from toolkit.rundir import RunDir

    try:
        job = _job_from_json(json.loads(Path(job_file).read_text()))
        pd = paddle()
        _set_device(job.device)
        pd.distributed.init_parallel_env()
        rank, world = pd.distributed.get_rank(), pd.distributed.get_world_size()
        print(f"toolkit QAT {job.task}: rank {rank} of {world}, pid {os.getpid()}", file=sys.stderr, flush=True)
        run_qat(job, RunDir(Path(job_file).parent.parent.parent), rank=rank, world=world)
    except ToolkitError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # library chatter (setuptools, paddle), as the CLI does
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if len(sys.argv) != 2:
        print("usage: python -m paddle.distributed.launch ... python -m toolkit.stages.quantize.distributed JOB.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(worker(sys.argv[1]))
