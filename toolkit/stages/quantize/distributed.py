"""Data-parallel and multi-node QAT on Paddle's own launcher, `python -m paddle.distributed.launch`.

The `toolkit quantize --devices 0,1,2,3` (GPUs) or `--nproc N` (CPU processes, gloo backend)
process is the parent: it runs the pre-training float-fallback search once (search.json, which
every rank reads), writes the job to RUN/jobs/quantize-<task>.job.json (runners/jobfiles.py, as for
any stage run in another process), and starts the launcher in
collective mode with `-m toolkit.stages.quantize.distributed RUN NAME` as each rank's program; with
`--nodes host1,host2 --master host1:port` each node runs the same command and its launcher
joins the others through the master. Each rank runs the one QAT loop, train.run_qat, with
its rank and the world size: the model in paddle.DataParallel, its slice of the step's global
batch (the batch a single process draws for that step), rank 0 alone writing checkpoints,
train_log.jsonl, the after-training search, qat.json and the job's result.json. The logs of every rank are kept in
quant/<task>/dist_logs/workerlog.<local rank> (launcher.log: the launcher's own).

The parent follows rank 0's train_log.jsonl for progress. When a rank dies, the launcher stops
the others and exits; the parent names the rank, its log file and the log's last lines, and
points at `--resume`, which continues from rank 0's last checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError
from toolkit.jobs import Distributed, QuantJob
from toolkit.rundir import RunDir
from toolkit.runners.envs import child_python_env
from toolkit.runners.jobfiles import read_job, read_result, write_job, write_result
from toolkit.stages.quantize.ops import set_device
from toolkit.stages.quantize.train import TrainLogFollower, latest_checkpoint, run_qat, search_before_training


# ------------------------------------------------------------------ the plan
def node_rank(dist: Distributed) -> int:
    """This machine's place in --nodes: $TOOLKIT_NODE_RANK, else its host name or an address of it."""
    hosts = dist.nodes
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


# ------------------------------------------------------------------ parent: launch and watch
def launcher_argv(dist: Distributed, log_dir: Path, run_root: Path, name: str, task: str) -> list[str]:
    argv = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir), "--job_id", f"toolkit-qat-{task}"]
    argv += ["--devices", dist.devices] if dist.devices else ["--nproc_per_node", str(dist.nproc)]
    if dist.nodes:
        argv += ["--nnodes", str(len(dist.nodes)), "--master", dist.master, "--rank", str(node_rank(dist))]
    # A non-.py program is run as given: each rank is `python -u -m toolkit.stages.quantize.distributed RUN NAME`.
    return argv + [sys.executable, "-u", "-m", "toolkit.stages.quantize.distributed", str(run_root), name]


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
    latest = latest_checkpoint(Path(log_dir).parent / "ckpt")
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


def launch(job: QuantJob, run: RunDir, progress: Callable[[int, int, float], None] | None = None,
           log: Callable[[str], None] | None = None) -> dict:
    """Run the QAT of `job` data-parallel through paddle.distributed.launch; returns rank 0's result."""
    dist = job.dist
    world = dist.world_size
    run.quant_dir(job.task).mkdir(parents=True, exist_ok=True)
    search_before_training(job, run)  # once, here: the ranks read quant/<task>/search.json
    log_dir = run.dist_logs(job.task)
    if not job.options.resume and log_dir.exists():
        for f in log_dir.iterdir():
            if f.is_file():
                f.unlink()
    log_dir.mkdir(parents=True, exist_ok=True)
    name, result_file = write_job(run, "quantize", job)
    argv = launcher_argv(dist, log_dir, run.root, name, job.task)
    env = child_python_env(PYTHONUNBUFFERED="1")
    if job.options.device != "gpu":
        env["PADDLE_DISTRI_BACKEND"] = "gloo"  # CPU collectives
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // dist.per_node)))
    if log:
        where = f"{len(dist.nodes)} nodes, this is node {node_rank(dist)}" if dist.nodes else "1 node"
        log(f"QAT {job.task}: {world} ranks ({where}) through paddle.distributed.launch; logs in {log_dir}")
    follower = TrainLogFollower(job, run, progress)
    with open(log_dir / "launcher.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(run.root), start_new_session=True)
        try:
            while True:
                code = proc.poll()
                follower.poll()
                if code is not None:
                    break
                time.sleep(0.5)
        except BaseException:
            _stop(proc)
            raise
    if code != 0:
        raise _failure(job, world, code, log_dir)
    info = read_result(result_file, f"QAT {job.task}", "rank 0", code, f"see {log_dir}/workerlog.0", prefix=False)
    info["distributed"] = {"world_size": world, "logs": str(log_dir), **dist.model_dump()}
    return info


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
def worker(run_dir: str, name: str) -> int:
    """One rank: set up paddle.distributed, run the QAT loop with this rank and the world size;
    rank 0 writes the result next to the job file."""
    from toolkit.engine import paddle

    try:
        run = RunDir(run_dir, create=False)
        _, job = read_job(run, name)
        result_file = run.job_files(name)[1]
        pd = paddle()
        set_device(job.options.device)
        pd.distributed.init_parallel_env()
        rank, world = pd.distributed.get_rank(), pd.distributed.get_world_size()
        print(f"toolkit QAT {job.task}: rank {rank} of {world}, pid {os.getpid()}", file=sys.stderr, flush=True)
        info = run_qat(job, run, rank=rank, world=world)
        if rank == 0:
            write_result(result_file, info)
    except ToolkitError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr, flush=True)
        return 2
    except (RuntimeError, OSError) as exc:
        if not _PEER_LOST.search(str(exc)):
            raise
        # A collective failed because a peer went away. Stay alive a little so that the launcher,
        # which polls its ranks each second and reports the first failed one, names the peer that
        # died (and its signal) rather than this rank, which only followed it.
        print(f"error: a collective operation failed: another rank stopped ({str(exc).strip().splitlines()[-1][:200]})",
              file=sys.stderr, flush=True)
        time.sleep(PEER_GRACE_S)
        return 3
    return 0


_PEER_LOST = re.compile(r"gloo|pair\.cc|Connection (?:closed|reset)|TIMEOUT|NCCL", re.I)
PEER_GRACE_S = 10


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # library chatter (setuptools, paddle), as the CLI does
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if len(sys.argv) != 3:
        print("usage: python -m paddle.distributed.launch ... python -m toolkit.stages.quantize.distributed RUN_DIR JOB_NAME", file=sys.stderr)
        sys.exit(2)
    sys.exit(worker(sys.argv[1], sys.argv[2]))
