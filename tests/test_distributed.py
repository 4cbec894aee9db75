"""python -m train.distributed on one node: 2 ranks through msrun on loopback (CPU, mccl).

Several nodes: test_multinode.py.

One data-parallel step on 2 ranks x 4 images must equal one single-process step on the
combined 8 images. BatchNorm is frozen (--freeze-bn: running statistics, per-sample like
IN) so a rank's batch statistics cannot differ from the combined batch's; gradients are
averaged over ranks (gradients_mean) and the loss is a per-rank mean, so the averaged
gradient is the combined batch's gradient.

A launcher's stop signals (a hang-up, then a burst) and a SIGKILLed msrun stop the run,
named as such, and leave no process of it behind.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import List, Tuple

import pytest

ms = pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from train.distributed import processes_with_env  # noqa: E402
from train.faults import FAULT_ENV  # noqa: E402
from train_helpers import (CLASSES, MARKER_ENV, last_json, load_dumped_weights, make_image_folder, max_weight_diff,  # noqa: E402
                           run_module)

from edge_helpers import REPO, subprocess_env  # noqa: E402

pytestmark = pytest.mark.needs_mindspore


STEP = ["--arch", "resnet_ibn_a_tiny", "--image-size", "64", "--resize", "73", "--workers", "1", "--epochs", "1",
        "--lr", "0.05", "--no-augment", "--no-shuffle", "--freeze-bn", "--max-steps", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory) -> Path:
    """Exactly 8 readable images (3 + 3 + 2) and one corrupt file: 2 ranks x batch 4 = all of them."""
    root = make_image_folder(tmp_path_factory.mktemp("eight"), per_class=3, size=80)
    (root / CLASSES[2] / ("%s_02.jpg" % CLASSES[2])).unlink()
    return root


def test_two_ranks_equal_a_single_process_step_on_the_combined_batch(eight_images, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    logs = tmp_path / "logs"
    proc = run_module("train.distributed", [
        "--nproc", "2", "--device", "CPU", "--master-port", free_port(), "--log-dir", logs, "--quiet", "--",
        *STEP, "--train-dir", eight_images, "--val-dir", eight_images, "--batch-size", "4", "--output-dir", tmp_path / "dist",
        "--dump-weights", tmp_path / "dist.npz",
    ], timeout=900)
    assert "all 2 ranks finished" in proc.stdout
    for rank in (0, 1):
        log = (logs / ("worker_%d.log" % rank)).read_text()
        assert "2 process(es), 1 steps/epoch of 8 images" in log
        assert last_json("\n".join(ln for ln in log.splitlines() if ln.startswith("{")))["rank"] == rank
        assert ("eval epoch 1: top-1" in log) == (rank == 0)  # rank 0 evaluates and checkpoints
        assert ("settings saved to %s" % (tmp_path / "dist" / "config.yaml") in log) == (rank == 0)  # and saves them
    assert (tmp_path / "dist" / "best.ckpt").is_file()
    assert "batch_size: 4\n" in (tmp_path / "dist" / "config.yaml").read_text()
    rank0, shard0 = load_dumped_weights(tmp_path / "dist.rank0.npz")
    rank1, shard1 = load_dumped_weights(tmp_path / "dist.rank1.npz")
    # disjoint shards that together are the whole (checked) dataset
    assert len(shard0) == len(shard1) == 4 and not set(shard0) & set(shard1)
    assert len(set(shard0) | set(shard1)) == 8

    single = last_json(run_module("train", STEP + [
        "--device", "CPU", "--train-dir", eight_images, "--batch-size", "8", "--output-dir", tmp_path / "single",
        "--dump-weights", tmp_path / "single.npz",
    ]).stdout)
    assert single["world_size"] == 1 and single["global_step"] == 1
    reference, _ = load_dumped_weights(tmp_path / "single.npz")

    from train.models import create_model

    ms.set_seed(1)  # the CLI's default seed: the initial weights of every run above
    initial = {p.name: p.asnumpy() for p in create_model("resnet_ibn_a_tiny", num_classes=3).trainable_params()}
    assert rank0.keys() == rank1.keys() == reference.keys() == initial.keys()
    ranks_diff, dist_diff = max_weight_diff(rank0, rank1), max_weight_diff(rank0, reference)
    moved = max_weight_diff(reference, initial)
    print("rank0 vs rank1 %.3g, distributed vs single %.3g, step size %.3g" % (ranks_diff, dist_diff, moved))
    assert ranks_diff == 0.0
    assert moved > 1e-3  # the step really changed the weights...
    assert dist_diff <= 1e-5  # ...and both ways the same


@pytest.mark.slow
def test_a_crashing_rank_stops_every_rank_and_the_launcher_fails_with_its_error(eight_images, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1")
    monkeypatch.setenv(MARKER_ENV, str(tmp_path))
    logs = tmp_path / "logs"
    proc = run_module("train.distributed", [
        "--nproc", "2", "--device", "CPU", "--master-port", free_port(), "--log-dir", logs, "--quiet",
        "--cluster-timeout", "120", "--", "--train-dir", eight_images, "--batch-size", "2", "--epochs", "3",
        "--arch", "resnet_ibn_a_tiny", "--image-size", "64", "--resize", "73", "--workers", "1",
        "--output-dir", tmp_path / "out",
    ], check=False, timeout=600)
    assert proc.returncode == 1
    assert "==== rank 1 on node 0 failed (exit status 1)" in proc.stdout and "fault injected on rank 1" in proc.stdout
    assert "rank 0 on node 0 failed" not in proc.stdout
    assert "error: rank 1 on node 0 failed (exit status 1); every rank was stopped" in proc.stdout
    # rank 0 did not go on training alone: it never finished its 3 epochs
    assert "epochs_completed" not in (logs / "worker_0.log").read_text()
    assert not processes_with_env(MARKER_ENV, str(tmp_path)), "ranks left running"


# ----------------------------------------------------------------------------- signals and kills


def _start_one_rank(eight_images: Path, tmp_path: Path) -> Tuple[subprocess.Popen, Path, str]:
    """A launcher of one rank (and the scheduler), marked; returned once both guards run."""
    marker, logs = uuid.uuid4().hex, tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "train.distributed", "--nproc", "1", "--device", "CPU",
                             "--master-port", str(free_port()), "--log-dir", str(logs), "--quiet", "--",
                             "--train-dir", str(eight_images), "--arch", "resnet_ibn_a_tiny", "--image-size", "64",
                             "--resize", "73", "--workers", "1", "--output-dir", str(tmp_path / "out")],
                            cwd=str(REPO), env=subprocess_env({MARKER_ENV: marker}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not all((logs / "status" / name).is_file() for name in ("rank_0.json", "scheduler.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=60)[0]
        time.sleep(0.05)
    return proc, logs, marker


def _cmdline(pid: int) -> bytes:
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return b""


def _survivors(marker: str, wait_s: float = 15.0) -> List[int]:
    deadline = time.monotonic() + wait_s
    while processes_with_env(MARKER_ENV, marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_with_env(MARKER_ENV, marker)


def test_a_killed_msrun_is_named_and_takes_every_rank_with_it(eight_images, tmp_path):
    """msrun SIGKILLed (by an operator, the OOM killer): its guards and ranks die with it; the
    launcher names msrun, not a rank that merely died with it."""
    proc, _, marker = _start_one_rank(eight_images, tmp_path)
    msrun = [pid for pid in processes_with_env(MARKER_ENV, marker) if b"mindspore.parallel.cluster.run" in _cmdline(pid)]
    assert len(msrun) == 1, msrun
    os.kill(msrun[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert out.strip().splitlines()[-1] == "error: msrun on node 0 failed (killed by SIGKILL); every rank was stopped", out
    assert not _survivors(marker)


def test_an_interrupted_launcher_stops_its_run_once_however_often_it_is_signalled(eight_images, tmp_path):
    """A hang-up (the ssh session gone), then an impatient burst of SIGTERMs and SIGINTs: the
    launcher stops every rank, exits 130 with one error line, and no signal cuts its cleanup
    short with a traceback."""
    proc, _, marker = _start_one_rank(eight_images, tmp_path)
    os.kill(proc.pid, signal.SIGHUP)
    for _ in range(10):
        time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGINT):
            if proc.poll() is None:
                os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1] == "error: the launcher of node 0 was interrupted; every rank was stopped", out
    assert not _survivors(marker)
