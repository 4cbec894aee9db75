"""``python -m train.distributed``: data-parallel training over N processes through msrun.

    python -m train.distributed --nproc 2 --device CPU --master-port 8118 --log-dir runs/logs \\
        -- --train-dir data/train --arch resnet50_ibn_a --batch-size 64

msrun (MindSpore's own launcher) starts a scheduler and N workers, each running
``python -m train <train args>``; the workers join the process group (HCCL on Ascend,
NCCL on GPU, mccl on CPU) and train data-parallel with averaged gradients. Worker K logs
to ``LOG_DIR/worker_K.log``. When one rank fails msrun kills the others; this launcher
then exits non-zero and prints the failed rank's last log lines.

msrun starts workers with the ``python`` found on PATH, not the interpreter running it,
so this launcher puts a ``python`` that is this interpreter first on PATH, and the
project root on PYTHONPATH so ``-m train`` resolves from any working directory.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .config import _device

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# MindSpore's C++ log lines carry this prefix; the Python error lines are what a user needs.
_MS_LOG_LINE = re.compile(r"^\[(WARNING|INFO|DEBUG)\] ")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.distributed",
        description="Data-parallel training over N processes with msrun; arguments after -- go to python -m train.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m train.distributed --nproc 8 --device Ascend -- --train-dir /data/train --epochs 100",
    )
    p.add_argument("--nproc", type=int, required=True, help="number of processes (ranks) on this machine")
    p.add_argument("--device", type=_device, required=True, metavar="{Ascend,GPU,CPU}",
                   help="device target of every rank (one device per rank on GPU/Ascend)")
    p.add_argument("--master-addr", default="127.0.0.1", help="scheduler address (default: 127.0.0.1)")
    p.add_argument("--master-port", type=int, default=8118, help="scheduler port (default: 8118)")
    p.add_argument("--log-dir", default="runs/distributed-logs", help="per-rank logs worker_K.log (default: %(default)s)")
    p.add_argument("--cluster-timeout", type=int, default=300,
                   help="seconds the ranks wait for each other to join (default: %(default)s)")
    p.add_argument("--tail-lines", type=int, default=40, help="log lines shown from a failed rank (default: 40)")
    p.add_argument("--quiet", action="store_true", help="do not stream rank 0's log to the console")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m train")
    return p


def _python_shim(directory: Path) -> Path:
    """A directory whose ``python`` is this interpreter (msrun runs ``python`` from PATH).

    A script, not a symlink: a virtual environment's interpreter finds its ``pyvenv.cfg``
    from the path it was started by, so a symlink elsewhere would lose the venv.
    """
    shim = directory / "python"
    shim.write_text('#!/bin/sh\nexec "%s" "$@"\n' % sys.executable)
    shim.chmod(0o755)
    return directory


def msrun_command(nproc: int, master_addr: str, master_port: int, log_dir: Path, cluster_timeout: int,
                  train_args: Sequence[str], tail_rank0: bool = True) -> List[str]:
    return [
        sys.executable, "-m", "mindspore.parallel.cluster.run",
        "--worker_num=%d" % nproc,
        "--local_worker_num=%d" % nproc,
        "--master_addr=%s" % master_addr,
        "--master_port=%d" % master_port,
        "--log_dir=%s" % log_dir,
        "--join=True",
        "--cluster_time_out=%d" % cluster_timeout,
        "--tail_worker_log=%s" % ("0" if tail_rank0 else str(nproc + 1)),
        "python", "-m", "train",
    ] + list(train_args)


def worker_logs(log_dir: Path) -> List[Tuple[int, Path]]:
    found = []
    for path in Path(log_dir).glob("worker_*.log"):
        m = re.fullmatch(r"worker_(\d+)\.log", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


# How much of each log's end failed_ranks reads: a rank's final traceback, even amid
# MindSpore's log lines, without rereading hours of training logs every poll.
LOG_TAIL_BYTES = 256 * 1024


def _log_tail(path: Path, max_bytes: int = LOG_TAIL_BYTES) -> str:
    with open(str(path), "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", "replace")
    return text if size <= max_bytes else text.split("\n", 1)[-1]  # drop the cut first line


def failed_ranks(log_dir: Path) -> List[Tuple[int, List[str]]]:
    """Ranks whose log ends in a Python error, with those lines (MindSpore's own log lines dropped)."""
    failures = []
    for rank, path in worker_logs(log_dir):
        lines = [ln for ln in _log_tail(path).splitlines() if not _MS_LOG_LINE.match(ln)]
        start = next((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), None)
        if start is None:
            start = next((i for i, ln in enumerate(lines) if ln.startswith("error:")), None)
        if start is not None:
            failures.append((rank, lines[start:]))
    return failures


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> int:
    """SIGINT makes msrun kill every rank and the scheduler; SIGKILL if it does not exit in time."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
    except ProcessLookupError:
        return proc.wait()


def _supervise(proc: subprocess.Popen, log_dir: Path, grace: float = 5.0, poll: float = 1.0) -> int:
    """Wait for msrun; once a rank has died with an error, give msrun ``grace`` seconds to stop
    the others, then stop it (its scheduler otherwise waits for the lost rank's heartbeat)."""
    failed_since = None
    while True:
        try:
            return proc.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            pass
        if failed_since is None:
            if failed_ranks(log_dir):
                failed_since = time.monotonic()
        elif time.monotonic() - failed_since > grace:
            _stop(proc)
            return 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    if args.nproc < 1:
        print("error: --nproc must be at least 1", file=sys.stderr)
        return 2
    if "--device" in train_args or any(a.startswith("--device=") for a in train_args):
        print("error: give --device to train.distributed, not after --", file=sys.stderr)
        return 2
    train_args = ["--device", args.device] + train_args
    log_dir = Path(args.log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    for _, old in worker_logs(log_dir):
        old.unlink()  # a previous run's logs would be mistaken for this one's

    with tempfile.TemporaryDirectory(prefix="ibnedge-msrun-") as tmp:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(_python_shim(Path(tmp))), str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
        env.setdefault("GLOG_v", "2")  # MindSpore C++ log: warnings and errors
        cmd = msrun_command(args.nproc, args.master_addr, args.master_port, log_dir, args.cluster_timeout,
                            train_args, tail_rank0=not args.quiet)
        print("launching %d ranks on %s: %s" % (args.nproc, args.device, " ".join(cmd)), flush=True)
        started = time.time()
        # Own session: an interrupt of this launcher reaches msrun, which then stops every rank.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        # msrun and the ranks run in sessions of their own: a terminated launcher must stop them.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            code = _supervise(proc, log_dir)
        except KeyboardInterrupt:
            _stop(proc)
            print("interrupted: all ranks stopped", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)

    failures = failed_ranks(log_dir)
    if code == 0 and not failures:
        print("all %d ranks finished in %.1f s; logs in %s" % (args.nproc, time.time() - started, log_dir), flush=True)
        return 0
    if not failures:
        print("error: msrun exited with status %d; see the logs in %s" % (code, log_dir), file=sys.stderr)
        return code or 1
    for rank, lines in failures:
        print("\n==== rank %d failed (%s) ====" % (rank, log_dir / ("worker_%d.log" % rank)), file=sys.stderr)
        print("\n".join(lines[-args.tail_lines:]), file=sys.stderr)
    print("error: rank(s) %s failed; every rank was stopped" % ", ".join(str(r) for r, _ in failures), file=sys.stderr)
    return code or 1


if __name__ == "__main__":
    raise SystemExit(main())
