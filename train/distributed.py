"""``python -m train.distributed``: data-parallel training over one or more nodes through msrun.

One node (``--nproc`` is the single-node spelling of ``--nproc-per-node``):

    python -m train.distributed --nproc 8 --device Ascend -- --train-dir /data/train

N nodes of M ranks each: run the same command on every node, with its own ``--node-rank``
(0 is the master: the node whose address is ``--master-addr``):

    python -m train.distributed --nnodes 2 --node-rank K --nproc-per-node 8 --device Ascend \\
        --master-addr 10.0.0.1 --master-port 8118 [--rank-table hccl.json] -- --train-dir /data/train

Node K runs global ranks K*M .. K*M+M-1 (its local worker i is global rank K*M+i, on
device i, logging to ``LOG_DIR/worker_<global rank>.log``); rank 0 writes the checkpoints,
evaluations and summary; every rank reads its own shard of the data. msrun (MindSpore's
launcher) starts the ranks and, on node 0, the scheduler; the ranks join one process group
(HCCL on Ascend, NCCL on GPU, mccl on CPU) and average their gradients.

Failures are seen from exit statuses, never from log text: every rank runs under
``train.rank_guard``, which records its exit status and dies with msrun, which dies with
this launcher. The launchers talk to node 0's over ``--control-port`` (``train.rendezvous``):
a failed rank, a lost node or a node that never joins stops every node, and every
launcher exits non-zero naming the rank and node (with the rank's last log lines).

Several nodes on one host (tests): msrun would start a scheduler on every node whose own
address is ``--master-addr``, so on such a node other than node 0 this launcher starts the
ranks itself, with the environment msrun gives them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ibnedge.errors import DEBUG_ENV, UserError, add_debug_flag, run_reporting

from . import rendezvous
from .config import INVOCATION_SETTINGS, _device
from .owned_dirs import owned_temp_dir
from .rank_guard import (LAUNCHER_PID_ENV, SCHEDULER, describe_exit, die_with_parent, rank_of, read_status,
                         status_name)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# MindSpore's C++ log lines carry this prefix; the Python error lines are what a user needs.
_MS_LOG_LINE = re.compile(r"^\[(WARNING|INFO|DEBUG)\] ")
_POLL_S = 0.5
MIN_HEARTBEAT_TIMEOUT_S = 10 * _POLL_S  # beats go out between polls: ten chances per timeout
# The temporary directory of a launcher's `python` shim; a SIGKILLed launcher's is removed by the next one.
SHIM_DIR_PREFIX = "ibnedge-msrun-"


class LaunchError(UserError, ValueError):
    """The launcher's flags do not make a cluster (node ranks, ports, rank table, --device placement)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.distributed",
        description="Data-parallel training over N nodes x M processes with msrun; arguments after -- go to "
                    "python -m train. Run it once on every node.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m train.distributed --nproc 8 --device Ascend -- --train-dir /data/train\n"
               "  python -m train.distributed --nnodes 2 --node-rank 1 --nproc-per-node 8 --device GPU "
               "--master-addr 10.0.0.1 -- --train-dir /data/train",
    )
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes (default: %(default)s)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1; 0 is the master (default: %(default)s)")
    p.add_argument("--nproc-per-node", "--nproc", dest="nproc_per_node", type=int, required=True,
                   help="processes (ranks, one per device) on this node, the same on every node; "
                        "--nproc is the single-node spelling")
    p.add_argument("--device", type=_device, required=True, metavar="{Ascend,GPU,CPU}",
                   help="device target of every rank (one device per rank on GPU/Ascend)")
    p.add_argument("--master-addr", default="127.0.0.1",
                   help="address of node rank 0, where the scheduler runs: IPv4, IPv6 or a host name "
                        "(default: %(default)s)")
    p.add_argument("--master-port", type=int, default=8118, help="scheduler port (default: %(default)s)")
    p.add_argument("--control-port", type=int, default=None,
                   help="port of the launchers' own channel on node rank 0 (default: master port + 1)")
    p.add_argument("--rank-table", metavar="FILE", default=None, help="Ascend rank table (HCCL) for msrun")
    p.add_argument("--log-dir", default="runs/distributed-logs",
                   help="per-rank logs worker_<global rank>.log (default: %(default)s)")
    p.add_argument("--cluster-timeout", type=int, default=300,
                   help="seconds the nodes and ranks wait for each other to join (default: %(default)s)")
    p.add_argument("--heartbeat-timeout", type=float, default=rendezvous.HEARTBEAT_TIMEOUT_S,
                   help="seconds without a word from a node's launcher (its machine frozen, its packets dropped) "
                        "before it is named lost; the same on every node (default: %(default)g)")
    p.add_argument("--tail-lines", type=int, default=40, help="log lines shown from a failed rank (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="do not stream this node's first rank's log to the console")
    p.add_argument("--dry-run", action="store_true", help="print this node's ranks and msrun command, start nothing")
    add_debug_flag(p)  # also given to every rank (IBNEDGE_DEBUG=1): a failed rank's log shows its traceback
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m train")
    return p


@dataclass(frozen=True)
class Plan:
    """This node's share of the run."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    device: str
    master_addr: str
    master_port: int
    control_port: int
    log_dir: Path
    cluster_timeout: int
    heartbeat_timeout: float = rendezvous.HEARTBEAT_TIMEOUT_S
    rank_table: Optional[Path] = None

    @property
    def world(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def global_ranks(self) -> range:
        first = self.node_rank * self.nproc_per_node
        return range(first, first + self.nproc_per_node)

    @property
    def runs_scheduler(self) -> bool:
        return self.node_rank == 0

    @property
    def status_dir(self) -> Path:
        return self.log_dir / "status"

    @property
    def msrun_log(self) -> Path:
        return self.log_dir / ("msrun-node%d.log" % self.node_rank)

    def worker_log(self, global_rank: int) -> Path:
        return self.log_dir / ("worker_%d.log" % global_rank)

    @property
    def scheduler_log(self) -> Path:
        return self.log_dir / "scheduler.log"  # msrun's name

    def statuses(self) -> List[str]:
        """The guarded processes of this node, by status file name."""
        return [status_name(g) for g in self.global_ranks] + ([SCHEDULER] if self.runs_scheduler else [])

    def log_of(self, name: str) -> Path:
        rank = rank_of(name)
        return self.scheduler_log if rank is None else self.worker_log(rank)


def plan_from(args: argparse.Namespace) -> Plan:
    """Checked settings; ValueError says what to fix."""
    if args.nnodes < 1:
        raise LaunchError("--nnodes must be at least 1")
    if not 0 <= args.node_rank < args.nnodes:
        raise LaunchError("--node-rank must be within 0..%d (--nnodes %d)" % (args.nnodes - 1, args.nnodes))
    if args.nproc_per_node < 1:
        raise LaunchError("--nproc-per-node must be at least 1")
    rank_table = None
    if args.rank_table:
        if args.device != "Ascend":
            raise LaunchError("--rank-table is for Ascend (HCCL); %s needs none" % args.device)
        rank_table = Path(args.rank_table).resolve()
        if not rank_table.is_file():
            raise LaunchError("--rank-table %s: file not found on node rank %d" % (args.rank_table, args.node_rank))
    control = args.control_port if args.control_port is not None else args.master_port + 1
    for name, port in (("--master-port", args.master_port), ("--control-port", control)):
        if not 1024 <= port <= 65535:
            raise LaunchError("%s %d: choose a port within 1024..65535" % (name, port))
    if control == args.master_port:
        raise LaunchError("--control-port must differ from --master-port")
    if not args.heartbeat_timeout >= MIN_HEARTBEAT_TIMEOUT_S:
        raise LaunchError("--heartbeat-timeout %g: give at least %g s (a launcher looks at its channel every %g s)"
                          % (args.heartbeat_timeout, MIN_HEARTBEAT_TIMEOUT_S, _POLL_S))
    return Plan(args.nnodes, args.node_rank, args.nproc_per_node, args.device, args.master_addr, args.master_port,
                control, Path(args.log_dir).resolve(), args.cluster_timeout, args.heartbeat_timeout, rank_table)


def guarded_train(plan: Plan, train_args: Sequence[str]) -> List[str]:
    """What msrun runs for every rank and the scheduler (``python`` is this interpreter, see ``_python_shim``)."""
    return ["python", "-m", "train.rank_guard", "--status-dir", str(plan.status_dir), "--"] + list(train_args)


def msrun_command(plan: Plan, train_args: Sequence[str]) -> List[str]:
    cmd = [
        sys.executable, "-m", "mindspore.parallel.cluster.run",
        "--worker_num=%d" % plan.world,
        "--local_worker_num=%d" % plan.nproc_per_node,
        "--node_rank=%d" % plan.node_rank,
        "--master_addr=%s" % plan.master_addr,
        "--master_port=%d" % plan.master_port,
        "--log_dir=%s" % plan.log_dir,
        "--join=True",
        "--cluster_time_out=%d" % plan.cluster_timeout,
        # No rank has this id, so msrun tails no log: its `tail -f` would outlive a killed
        # msrun. The launcher follows the log itself.
        "--tail_worker_log=%d" % plan.world,
    ]
    if plan.rank_table is not None:
        cmd.append("--rank_table_file=%s" % plan.rank_table)
    return cmd + guarded_train(plan, train_args)


def worker_env(plan: Plan, local: int) -> Dict[str, str]:
    """The environment msrun gives a worker (mindspore/parallel/cluster/process_entity/_api.py)."""
    rank = plan.global_ranks[local]
    env = {
        "MS_WORKER_NUM": str(plan.world), "MS_SCHED_HOST": plan.master_addr, "MS_SCHED_PORT": str(plan.master_port),
        "MS_TOPO_TIMEOUT": str(plan.cluster_timeout), "MS_ROLE": "MS_WORKER", "MS_NODE_ID": str(rank),
        "RANK_ID": str(rank), "RANK_SIZE": str(plan.world), "DEVICE_ID": str(local),
    }
    if plan.rank_table is not None:
        env["RANK_TABLE_FILE"] = str(plan.rank_table)
    return env


def is_local_address(address: str) -> bool:
    """Whether an IP address is one of this machine's (of this network namespace)."""
    try:
        with socket.socket(rendezvous.family_of(address), socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def describe_plan(plan: Plan, direct: bool) -> List[str]:
    ranks = plan.global_ranks
    span = "rank %d" % ranks[0] if len(ranks) == 1 else "ranks %d-%d" % (ranks[0], ranks[-1])
    lines = ["node %d of %d (%s): global %s of %d; master %s, control port %d"
             % (plan.node_rank, plan.nnodes, plan.device, span, plan.world,
                rendezvous.endpoint(plan.master_addr, plan.master_port), plan.control_port)]
    for local, rank in enumerate(plan.global_ranks):
        lines.append("  local worker %d = global rank %d, device %d, log %s" % (local, rank, local, plan.worker_log(rank)))
    if plan.runs_scheduler:
        lines.append("  scheduler log %s" % plan.scheduler_log)
    if direct:
        lines.append("  %s is also this machine's address (several nodes on one host): this node's ranks are "
                     "started without msrun, which would start a second scheduler" % plan.master_addr)
    return lines


# ----------------------------------------------------------------------------- this node's processes


def _python_shim(directory: Path) -> Path:
    """A directory whose ``python`` is this interpreter (msrun runs ``python`` from PATH).

    A script, not a symlink: a virtual environment's interpreter finds its ``pyvenv.cfg``
    from the path it was started by, so a symlink elsewhere would lose the venv.
    """
    shim = directory / "python"
    shim.write_text('#!/bin/sh\nexec "%s" "$@"\n' % sys.executable)
    shim.chmod(0o755)
    return directory


def _log_tail(path: Path, lines: int, max_bytes: int = 256 * 1024) -> List[str]:
    """The last ``lines`` lines of a log without MindSpore's own INFO/WARNING lines."""
    try:
        with open(str(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    kept = [ln for ln in text.splitlines()[1 if size > max_bytes else 0:] if not _MS_LOG_LINE.match(ln)]
    return kept[-lines:]


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_with_env(key: str, value: str) -> List[int]:
    """Live processes whose environment holds ``key=value`` (Linux /proc)."""
    needle = ("%s=%s" % (key, value)).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


_KILLED = "ended without an exit status (killed)"


class LocalRun:
    """This node's msrun (or, see the module doc, its directly started ranks), seen
    through the exit statuses the guards record."""

    def __init__(self, plan: Plan, train_args: Sequence[str], env: Dict[str, str], direct: bool, tail_lines: int):
        self.plan, self.tail_lines, self.direct = plan, tail_lines, direct
        self.env = dict(env, **{LAUNCHER_PID_ENV: str(os.getpid())})
        plan.status_dir.mkdir(parents=True, exist_ok=True)
        for name in plan.statuses():  # a previous run's statuses would be taken for this one's
            (plan.status_dir / (name + ".json")).unlink(missing_ok=True)
        if direct:
            self.procs = [self._start_rank(local, train_args) for local in range(plan.nproc_per_node)]
        else:
            cmd = msrun_command(plan, train_args)
            print("msrun: %s" % " ".join(cmd), flush=True)
            launcher = os.getpid()
            with open(str(plan.msrun_log), "w") as log:
                # Own session (an interrupt of the launcher's terminal is the launcher's to
                # handle); killed when this launcher dies, even by SIGKILL.
                self.procs = [subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True,
                                               preexec_fn=lambda: die_with_parent([launcher]))]

    def _start_rank(self, local: int, train_args: Sequence[str]) -> subprocess.Popen:
        rank = self.plan.global_ranks[local]
        cmd = guarded_train(self.plan, train_args)
        with open(str(self.plan.worker_log(rank)), "w") as log:
            return subprocess.Popen(cmd, env=dict(self.env, **worker_env(self.plan, local)), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self) -> Optional[Dict]:
        """None while running; ``{}`` when every process succeeded; else the first failure."""
        records = {name: read_status(self.plan.status_dir, name) for name in self.plan.statuses()}
        ended = {n: r for n, r in records.items() if r is not None and "exit" in r}
        failed = [n for n, r in ended.items() if r["exit"] != 0]
        if failed:
            first = min(failed, key=lambda n: ended[n]["started"] + ended[n].get("seconds", 0.0))
            return self._failure(first, describe_exit(int(ended[first]["exit"])))
        codes = [p.poll() for p in self.procs]
        if not self.direct and codes[0] is not None and codes[0] < 0:
            return self._msrun_failure(codes[0])  # killed: its guards died with it, unrecorded
        # A guard gone without its exit status (killed) while the others may wait for its rank
        # in a collective; read again, as it may have written its status and ended just now.
        for name, record in records.items():
            if record is not None and "exit" not in record and not _alive(int(record["pid"])):
                again = read_status(self.plan.status_dir, name)
                return None if again is not None and "exit" in again else self._failure(name, _KILLED)
        if any(c is None for c in codes):
            return None
        missing = [n for n in self.plan.statuses() if n not in ended]
        if missing:  # its guard was killed before it recorded anything, or never started
            return self._failure(missing[0], _KILLED)
        if any(codes):
            return self._msrun_failure(next(c for c in codes if c))
        return {}

    def _msrun_failure(self, code: int) -> Dict:
        return {"node": self.plan.node_rank, "title": "msrun on node %d failed (%s)"
                % (self.plan.node_rank, describe_exit(code)),
                "log": str(self.plan.msrun_log), "tail": _log_tail(self.plan.msrun_log, self.tail_lines)}

    def _failure(self, name: str, how: str) -> Dict:
        rank = rank_of(name)
        what = "the scheduler" if rank is None else "rank %d" % rank
        log = self.plan.log_of(name)
        return {"node": self.plan.node_rank, "title": "%s on node %d failed (%s)" % (what, self.plan.node_rank, how),
                "log": str(log), "tail": _log_tail(log, self.tail_lines)}

    def stop(self, wait_s: float = 15.0) -> List[int]:
        """Kill every process of this node's run; returns those still alive after ``wait_s``."""
        for p in self.procs:
            if p.poll() is None:  # not reaped yet, so its pid is still this run's
                _kill_group(p.pid)
        marker = self.env[LAUNCHER_PID_ENV]
        deadline = time.monotonic() + wait_s
        while True:
            left = processes_with_env(LAUNCHER_PID_ENV, marker)
            for pid in left:  # guards and ranks live in sessions of their own
                _kill_group(pid)
            if not left and all(p.poll() is not None for p in self.procs):
                return []
            if time.monotonic() > deadline:
                return left
            time.sleep(0.1)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


class _LogFollower:
    """Copies what a log file gains to stdout (msrun's own ``tail -f`` would outlive it)."""

    def __init__(self, path: Optional[Path]):
        self.path, self.offset = path, 0

    def pump(self) -> None:
        if self.path is None:
            return
        try:
            with open(str(self.path), "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        if data:
            self.offset += len(data)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()


# ----------------------------------------------------------------------------- the run


# Settings a node may choose for itself; every other training setting must be the same on
# every node (``--resume`` is compared as the file it names, once resolved).
_NODE_LOCAL_SETTINGS = INVOCATION_SETTINGS + ("explicit", "resume", "workers", "log_every", "dump_weights",
                                              "summary_json")


def _training_settings(train_args: List[str]) -> argparse.Namespace:
    from . import config as settings

    return settings.resolve(settings.train_parser(), train_args)


def _agreed_settings(cfg: argparse.Namespace) -> Dict:
    """The training settings every node must share, as JSON gives them back (lists, not tuples)."""
    shared = {k: v for k, v in sorted(vars(cfg).items()) if k not in _NODE_LOCAL_SETTINGS}
    return json.loads(json.dumps(shared, default=str))


def _resolve_resume(cfg: argparse.Namespace, node_rank: int) -> Optional[str]:
    """``--resume latest`` found once here and passed to every rank as a path, so the ranks
    cannot pick different files; the master checks that every node found the same one."""
    from .checkpoint import LATEST, resume_checkpoint

    if not cfg.resume:
        return None
    path = resume_checkpoint(cfg.resume, Path(cfg.output_dir), cfg.arch)
    if cfg.resume == LATEST:
        print("node %d: --resume latest is %s" % (node_rank, path), flush=True)
    return str(path.resolve())


def _link(plan: Plan, resume: Optional[str], settings: Dict):
    if plan.nnodes == 1:
        return rendezvous.Solo()
    hello = {"node": plan.node_rank, "nnodes": plan.nnodes, "nproc": plan.nproc_per_node, "device": plan.device,
             "resume": resume, "heartbeat_timeout": plan.heartbeat_timeout, "settings": settings}
    print("node %d: waiting for all %d nodes at %s (up to %d s)"
          % (plan.node_rank, plan.nnodes, rendezvous.endpoint(plan.master_addr, plan.control_port),
             plan.cluster_timeout), flush=True)
    if plan.node_rank == 0:
        link = rendezvous.Master(plan.master_addr, plan.control_port, hello)
        link.gather(plan.cluster_timeout)
    else:
        link = rendezvous.Member(plan.master_addr, plan.control_port, hello, plan.cluster_timeout)
    print("node %d: all %d nodes joined" % (plan.node_rank, plan.nnodes), flush=True)
    return link


def _supervise(local: LocalRun, link, follower: _LogFollower) -> Optional[Dict]:
    """None once every node succeeded; else the failure that stopped the run."""
    done = False
    while True:
        follower.pump()
        if not done:
            outcome = local.poll()
            if outcome:
                link.report_failure(outcome)
                return outcome
            if outcome is not None:
                done = True
                link.report_done()
        for kind, failure in link.events(_POLL_S):
            if kind == "failed":
                return failure
            if kind == "finished":
                follower.pump()
                return None


# What stops a launcher, with its run: Ctrl-C, a kill, its terminal or ssh session gone.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum, frame):
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_interrupt():
    """The first stop signal raises KeyboardInterrupt; later ones are ignored to the end, so
    that none cuts short the stopping it asked for (SIGKILL still works: the run dies with its
    launcher). Without one, the previous handlers are back afterwards."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        if signal.getsignal(_STOP_SIGNALS[0]) is _raise_interrupt:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _report(failure: Dict, plan: Plan, tail_lines: int) -> None:
    if failure.get("log"):
        print("\n==== %s; last lines of %s ====" % (failure["title"], failure["log"]), file=sys.stderr)
        print("\n".join(failure.get("tail", [])[-tail_lines:]), file=sys.stderr)
    everyone = "every rank on every node was stopped" if plan.nnodes > 1 else "every rank was stopped"
    print("error: %s; %s" % (failure["title"], everyone), file=sys.stderr, flush=True)


def _environment(shim_dir: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(_python_shim(shim_dir)), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("GLOG_v", "2")  # MindSpore C++ log: warnings and errors
    return env


def _train_args(args: argparse.Namespace, plan: Plan) -> List[str]:
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    if "--device" in train_args or any(a.startswith("--device=") for a in train_args):
        raise LaunchError("give --device to train.distributed, not after --")
    return ["--device", plan.device] + train_args


def launch(args: argparse.Namespace) -> int:
    # Resolved once, as msrun would: the scheduler, the ranks and the channel all use this IP.
    plan = replace(plan_from(args), master_addr=rendezvous.resolve_address(args.master_addr))
    train_args = _train_args(args, plan)
    direct = plan.node_rank > 0 and is_local_address(plan.master_addr)
    if plan.node_rank == 0 and not args.dry_run and not is_local_address(plan.master_addr):
        raise LaunchError("--master-addr %s is not an address of this machine, but node rank 0 runs the scheduler "
                         "there: run node rank 0 on %s, or give its address" % (plan.master_addr, plan.master_addr))
    print("\n".join(describe_plan(plan, direct)), flush=True)
    if args.dry_run:
        print("msrun: %s" % " ".join(msrun_command(plan, train_args)))
        return 0
    cfg = _training_settings(train_args)
    resume = _resolve_resume(cfg, plan.node_rank)
    if resume is not None:
        train_args += ["--resume", resume]  # the last --resume wins, over a config file's too
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with _stop_signals_interrupt():
        try:
            failure, interrupted = _run_node(plan, args, train_args, direct, resume, _agreed_settings(cfg))
        except rendezvous.RendezvousError as exc:
            print("error: %s" % exc, file=sys.stderr, flush=True)
            return 1
    if failure is None:
        print("all %d ranks finished in %.1f s (%d node%s); logs in %s"
              % (plan.world, time.time() - started, plan.nnodes, "s" if plan.nnodes > 1 else "", plan.log_dir),
              flush=True)
        return 0
    _report(failure, plan, args.tail_lines)
    return 130 if interrupted else 1


def _run_node(plan: Plan, args: argparse.Namespace, train_args: List[str], direct: bool, resume: Optional[str],
              settings: Dict) -> Tuple[Optional[Dict], bool]:
    """Join the other nodes, run this node's ranks, stop them all: (None once every node
    succeeded, else the failure; whether a stop signal ended the run here)."""
    link, local = None, None
    with owned_temp_dir(SHIM_DIR_PREFIX) as tmp:
        try:
            link = _link(plan, resume, settings)
            local = LocalRun(plan, train_args, _environment(tmp), direct, args.tail_lines)
            follower = _LogFollower(None if args.quiet else plan.worker_log(plan.global_ranks[0]))
            return _supervise(local, link, follower), False
        except KeyboardInterrupt:
            failure = {"node": plan.node_rank, "title": "the launcher of node %d was interrupted" % plan.node_rank}
            if link is not None:
                link.report_failure(failure)
            return failure, True
        finally:
            left = local.stop() if local is not None else []
            if link is not None:
                link.close()
            if left:
                print("warning: processes %s of this run outlived SIGKILL" % ", ".join(map(str, left)), file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # inherited by msrun and the ranks
    return run_reporting(lambda: launch(args), "error: ", args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
