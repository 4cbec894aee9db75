"""``python -m train.rank_guard``: one process of a distributed run, guarded.

msrun starts every rank (and the scheduler) as ``python -m train.rank_guard --status-dir
DIR -- <train args>``. The guard runs ``python -m train <train args>`` as its child and

- records how the child ended in ``DIR/<name>.json`` (``rank_<global rank>`` or
  ``scheduler``): the launcher detects a failed rank from this exit status, never from log
  text, so a rank that logs a traceback and carries on is not mistaken for a failed one;
- dies with its parent, and makes its child die with it (``PR_SET_PDEATHSIG``): when a
  node's launcher is killed (even with SIGKILL) msrun dies with it, then every guard, then
  every rank, so nothing of the run is left behind.

The chain is launcher -> msrun -> guard -> rank. A guard started after its msrun already
died would miss the signal, so it checks that the launcher (``LAUNCHER_PID_ENV``) is still
its parent or grandparent once the signal is armed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from .atomic_files import write_text_atomic

LAUNCHER_PID_ENV = "IBNEDGE_LAUNCHER_PID"
SCHEDULER = "scheduler"
_PR_SET_PDEATHSIG = 1


def status_name(global_rank: Optional[int]) -> str:
    """The status file stem of a rank (``None``: the scheduler)."""
    return SCHEDULER if global_rank is None else "rank_%d" % global_rank


def rank_of(name: str) -> Optional[int]:
    """The global rank a :func:`status_name` stands for (``None``: the scheduler)."""
    return None if name == SCHEDULER else int(name.split("_", 1)[1])


def status_path(status_dir: Path, name: str) -> Path:
    return Path(status_dir) / (name + ".json")


def read_status(status_dir: Path, name: str) -> Optional[Dict]:
    """What the guard recorded (``pid``, ``child``, and ``exit`` once the child ended), or None."""
    try:
        return json.loads(status_path(status_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_status(status_dir: Path, name: str, record: Dict) -> None:
    write_text_atomic(status_path(status_dir, name), json.dumps(record) + "\n")


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell exit status (a signal N becomes 128 + N)."""
    return returncode if returncode >= 0 else 128 - returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exit status %d" % returncode


def die_with_parent(expected_parents: List[int]) -> None:
    """SIGKILL this process when its parent dies; exit now if the parent (one of
    ``expected_parents``, at the parent or grandparent level) is already gone.

    Linux only (prctl); elsewhere it does nothing, and msrun is Linux-only anyway.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    ancestors = [os.getppid()]
    ancestors.append(_parent_of(ancestors[0]))
    if expected_parents and not set(expected_parents) & set(ancestors):
        os._exit(137)  # the parent died before the signal was armed: do as the signal would


def _parent_of(pid: int) -> int:
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def _identity() -> str:
    """Which process of the run this guard runs, from the environment msrun sets."""
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        return status_name(None)
    for key in ("MS_NODE_ID", "RANK_ID"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return status_name(int(value))
    return "pid_%d" % os.getpid()


def run_guarded(status_dir: Path, child_cmd: List[str]) -> int:
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    die_with_parent([int(launcher)] if launcher.isdigit() else [])
    name = _identity()
    guard_pid = os.getpid()
    started = time.time()
    # The child dies with this guard: msrun kills a scheduler's guard alone, not its group.
    child = subprocess.Popen(child_cmd, preexec_fn=lambda: die_with_parent([guard_pid]))
    record = {"name": name, "pid": guard_pid, "child": child.pid, "started": started}
    _write_status(status_dir, name, record)

    def forward(signum, frame):
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    returncode = child.wait()
    _write_status(status_dir, name, dict(record, exit=returncode, seconds=round(time.time() - started, 3)))
    return exit_status(returncode)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.rank_guard",
                                description="Run python -m train as one guarded process of a distributed run.")
    p.add_argument("--status-dir", required=True, help="where the exit status is recorded")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m train")
    args = p.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return run_guarded(Path(args.status_dir), [sys.executable, "-m", "train"] + list(train_args))


if __name__ == "__main__":
    raise SystemExit(main())
