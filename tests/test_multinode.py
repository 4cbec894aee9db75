"""python -m train.distributed across nodes: real launchers, msrun, ranks and sockets.

Two nodes on this machine, each in its own network namespace joined by a veth pair
(10.231.0.1 and 10.231.0.2): node 0's msrun starts the scheduler and node 1's does not,
as on two servers. Where namespaces cannot be made (not root, no CAP_NET_ADMIN) the nodes
share the loopback interface and the test output says so; node 1's launcher then starts
its ranks without msrun (see train.distributed). The rank-failure test uses loopback on
purpose, to cover that path everywhere.

The ranks train the tiny variant on 64 px crops over mccl (CPU). Each launcher's
environment carries a marker unique to the run, which every process of the run inherits:
after the launchers exit, no live process may carry it.

The control channel (train.rendezvous) is also tested on its own, over real loopback
sockets: clients that are not launchers, silent nodes, malformed reports.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from train.distributed import (SHIM_DIR_PREFIX, LocalRun, _agreed_settings, _environment, _training_settings,  # noqa: E402
                               is_local_address, main as launcher_main, msrun_command, parser, plan_from, processes_with_env)
from train.faults import FAULT_ENV, LOGGED_FAULT_ENV, STEP_SLEEP_ENV  # noqa: E402
from train.rank_guard import read_status  # noqa: E402
from train import rendezvous  # noqa: E402
from train.rendezvous import HEARTBEAT_TIMEOUT_S  # noqa: E402
from train_helpers import (CLASSES, MARKER_ENV, last_json, load_dumped_weights, make_image_folder, max_weight_diff,  # noqa: E402
                           relative_error)

from edge_helpers import REPO, subprocess_env  # noqa: E402

pytestmark = pytest.mark.needs_mindspore

TINY = ["--arch", "resnet_ibn_a_tiny", "--image-size", "64", "--resize", "73", "--workers", "1", "--log-every", "1"]
NETNS_ADDRESSES = ("10.231.0.1", "10.231.0.2")  # a /30 of our own, inside our own namespaces


# ----------------------------------------------------------------------------- two hosts


@dataclass
class Hosts:
    master_addr: str
    prefixes: List[List[str]]  # how to run a command on node 0 / node 1
    isolated: bool


def _ip(*args: str) -> None:
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, text=True, timeout=30)


def _make_namespaces(names: Sequence[str], veth: Sequence[str]) -> None:
    for name in names:
        _ip("netns", "add", name)
    _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
    for name, end, address in zip(names, veth, NETNS_ADDRESSES):
        _ip("link", "set", end, "netns", name)
        _ip("-n", name, "addr", "add", address + "/30", "dev", end)
        _ip("-n", name, "link", "set", end, "up")
        _ip("-n", name, "link", "set", "lo", "up")


def _delete_namespaces(names: Sequence[str], veth: Sequence[str]) -> None:
    for name in names:  # deleting a namespace deletes the veth end inside it
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    subprocess.run(["ip", "link", "del", veth[0]], capture_output=True, timeout=30)  # if never moved


def _announce(request, message: str) -> None:
    print(message)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n[test_multinode] " + message)


def loopback_hosts(master_addr: str = "127.0.0.1") -> Hosts:
    return Hosts(master_addr, [[], []], False)


def loopback_name() -> str:
    """A host name for the loopback address where this machine has one (msrun resolves host
    names, and so must a launcher that starts ranks itself: MindSpore takes only addresses)."""
    try:
        return "localhost" if is_local_address(rendezvous.resolve_address("localhost")) else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


@pytest.fixture(scope="module")
def hosts(request):
    tag = os.getpid()
    names, veth = ["ibnedge-%d-node0" % tag, "ibnedge-%d-node1" % tag], ["ibv%da" % tag, "ibv%db" % tag]
    try:
        if os.environ.get("IBNEDGE_TEST_NETNS") == "0":
            raise OSError("IBNEDGE_TEST_NETNS=0")
        _make_namespaces(names, veth)
    except (OSError, subprocess.SubprocessError) as exc:
        why = getattr(exc, "stderr", None) or exc
        _delete_namespaces(names, veth)
        _announce(request, "network namespaces unavailable (%s): FALLING BACK to loopback, both nodes on 127.0.0.1"
                  % str(why).strip())
        yield loopback_hosts()
        return
    try:
        _announce(request, "nodes in network namespaces %s (%s) and %s (%s), joined by a veth pair"
                  % (names[0], NETNS_ADDRESSES[0], names[1], NETNS_ADDRESSES[1]))
        yield Hosts(NETNS_ADDRESSES[0], [["ip", "netns", "exec", n] for n in names], True)
    finally:
        _delete_namespaces(names, veth)


_ports = itertools.count(0)


def free_port_pair(hosts: Hosts) -> int:
    """A master port whose successor (the control port) is free too."""
    if hosts.isolated:  # fresh namespaces: only our own runs use ports there
        return 9100 + 10 * next(_ports)
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                pass


# ----------------------------------------------------------------------------- launching nodes


@dataclass
class Node:
    rank: int
    proc: subprocess.Popen
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")


class Run:
    """The launchers of one job, one per node, started as a user would start them."""

    def __init__(self, hosts: Hosts, tmp: Path, name: str, nproc: int, train_args: Sequence[str],
                 env: Optional[Dict[str, str]] = None, cluster_timeout: int = 120):
        self.marker = "%s-%s" % (name, uuid.uuid4().hex)
        self.logs = [tmp / name / ("logs-node%d" % k) for k in range(2)]
        port = free_port_pair(hosts)
        child_env = subprocess_env(dict(env or {}, **{MARKER_ENV: self.marker, "ONEDNN_MAX_CPU_ISA": "AVX2"}))
        self.nodes = []
        for k in range(2):
            out = tmp / name / ("node%d.out" % k)
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = hosts.prefixes[k] + [
                sys.executable, "-m", "train.distributed", "--nnodes", "2", "--node-rank", str(k),
                "--nproc-per-node", str(nproc), "--device", "CPU", "--master-addr", hosts.master_addr,
                "--master-port", str(port), "--log-dir", str(self.logs[k]), "--cluster-timeout", str(cluster_timeout),
                "--quiet", "--"] + [str(a) for a in train_args]
            with open(str(out), "w") as f:
                proc = subprocess.Popen(cmd, cwd=str(REPO), env=child_env, stdout=f, stderr=subprocess.STDOUT)
            self.nodes.append(Node(k, proc, out))

    def wait(self, timeout: float = 600) -> List[int]:
        deadline = time.monotonic() + timeout
        try:
            return [n.proc.wait(timeout=max(1.0, deadline - time.monotonic())) for n in self.nodes]
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("launchers timed out after %ds:\n%s" % (timeout, self.outputs()))

    def kill(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.terminate()  # the launcher stops its ranks
        for n in self.nodes:
            try:
                n.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                n.proc.kill()

    def outputs(self) -> str:
        return "\n".join("---- node %d (exit %s)\n%s" % (n.rank, n.proc.returncode, n.text()[-5000:]) for n in self.nodes)

    def survivors(self, wait_s: float = 15.0) -> List[int]:
        """Processes of this run still alive ``wait_s`` after the launchers exited."""
        deadline = time.monotonic() + wait_s
        while True:
            left = processes_with_env(MARKER_ENV, self.marker)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def succeed(self, timeout: float = 600) -> None:
        codes = self.wait(timeout)
        assert codes == [0, 0], self.outputs()
        assert not self.survivors()


@pytest.fixture
def launch(tmp_path):
    """``launch(hosts, name, nproc, train_args, env=None)`` starts a Run; whatever a failed
    test leaves running is stopped at teardown."""
    runs: List[Run] = []

    def start(hosts: Hosts, name: str, nproc: int, train_args: Sequence[str], env: Optional[Dict[str, str]] = None) -> Run:
        runs.append(Run(hosts, tmp_path, name, nproc, train_args, env))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


def ranks_log(run: Run, node: int, rank: int) -> str:
    return (run.logs[node] / ("worker_%d.log" % rank)).read_text(errors="replace")


def summary_of(log: str) -> dict:
    return last_json("\n".join(ln for ln in log.splitlines() if ln.startswith("{")))


def assert_same_weights(weights: Dict, reference: Dict, what: str) -> None:
    """Within 1e-6 of the weights' scale (max |w| over the model); each parameter also within
    1e-5 of its own scale (parameters that start at 0, such as the norms' beta, are only as
    large as their updates, where float32 sums in another order differ by a few ulps)."""
    assert weights.keys() == reference.keys()
    names = sorted(reference)
    overall = relative_error(np.concatenate([weights[k].ravel() for k in names]),
                             np.concatenate([reference[k].ravel() for k in names]))
    each = max(relative_error(weights[k], reference[k]) for k in names)
    print("%s: max relative error %.3g of the model's scale, %.3g of a parameter's own" % (what, overall, each))
    assert overall <= 1e-6 and each <= 1e-5


@pytest.fixture(scope="module")
def sixteen_images(tmp_path_factory) -> Path:
    """16 readable images (6 + 5 + 5) and a corrupt file: 2 nodes x 2 ranks x batch 2 x 2 steps."""
    root = make_image_folder(tmp_path_factory.mktemp("sixteen"), per_class=6, size=72)
    for name in CLASSES[1:]:
        (root / name / ("%s_05.jpg" % name)).unlink()
    return root


# ----------------------------------------------------------------------------- the msrun command lines


def _plan(*argv: str):
    return plan_from(parser().parse_args(list(argv)))


def test_msrun_command_lines_for_ascend_gpu_and_cpu(tmp_path):
    """The exact command line msrun gets on each device (only CPU can run here)."""
    table = tmp_path / "hccl_2p.json"
    table.write_text("{}")
    logs = tmp_path / "logs"
    common = ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "8", "--master-addr", "192.0.2.10",
              "--master-port", "8118", "--log-dir", str(logs), "--cluster-timeout", "600"]
    train = ["--train-dir", "/data/train", "--epochs", "100"]
    guard = ["python", "-m", "train.rank_guard", "--status-dir", str(logs / "status"), "--"]
    msrun = [sys.executable, "-m", "mindspore.parallel.cluster.run", "--worker_num=16", "--local_worker_num=8",
             "--node_rank=1", "--master_addr=192.0.2.10", "--master_port=8118", "--log_dir=%s" % logs, "--join=True",
             "--cluster_time_out=600", "--tail_worker_log=16"]
    ascend = msrun_command(_plan(*common, "--device", "Ascend", "--rank-table", str(table)), ["--device", "Ascend"] + train)
    assert ascend == msrun + ["--rank_table_file=%s" % table] + guard + ["--device", "Ascend"] + train
    gpu = msrun_command(_plan(*common, "--device", "GPU"), ["--device", "GPU"] + train)
    assert gpu == msrun + guard + ["--device", "GPU"] + train
    cpu = msrun_command(_plan("--nproc", "2", "--device", "CPU", "--log-dir", str(logs)), ["--device", "CPU"] + train)
    assert cpu == [sys.executable, "-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2",
                   "--node_rank=0", "--master_addr=127.0.0.1", "--master_port=8118", "--log_dir=%s" % logs,
                   "--join=True", "--cluster_time_out=300", "--tail_worker_log=2"] + guard + ["--device", "CPU"] + train
    for line in ("msrun: " + " ".join(c) for c in (ascend, gpu, cpu)):
        print(line)

    # the CLI prints the same line, and which global rank each local worker is
    proc = subprocess.run([sys.executable, "-m", "train.distributed", *common, "--device", "Ascend", "--rank-table",
                           str(table), "--dry-run", "--", *train], cwd=str(REPO), env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "msrun: " + " ".join(ascend) in proc.stdout
    assert "local worker 7 = global rank 15, device 7, log %s" % (logs / "worker_15.log") in proc.stdout
    # a rank table only means something to HCCL
    assert launcher_main([*common, "--device", "GPU", "--rank-table", str(table), "--dry-run"]) == 2
    # beats go out between the launcher's polls of its channel: a timeout shorter than a few is refused
    assert launcher_main([*common, "--device", "GPU", "--heartbeat-timeout", "1", "--dry-run"]) == 2


# ----------------------------------------------------------------------------- runs


def test_two_nodes_train_as_one_process_on_the_combined_batch(hosts, sixteen_images, tmp_path, launch):
    """2 nodes x 2 ranks, 2 steps of batch 2 per rank == 1 process, 2 steps of batch 8.

    BatchNorm frozen (per-sample, like IN) and gradients averaged over ranks, so the
    combined batch's gradient is the single process's; the default lr scales with the
    global batch (base-lr x 8 / 256) on both sides.

    Rank 3 also logs a caught exception's traceback and an 'error:' line after its first
    step, and trains on: failures are exit statuses, so the run still succeeds."""
    step = TINY + ["--epochs", "1", "--base-lr", "1.6", "--no-augment", "--no-shuffle", "--freeze-bn",
                   "--train-dir", sixteen_images]
    run = launch(hosts, "combined", 2, step + ["--batch-size", "2", "--output-dir", tmp_path / "dist",
                                               "--dump-weights", tmp_path / "dist.npz"], env={LOGGED_FAULT_ENV: "3"})
    run.succeed()
    logged = ranks_log(run, 1, 3)
    assert "Traceback (most recent call last)" in logged and "error: a recoverable fault on rank 3" in logged
    node1 = run.nodes[1].text()
    assert "local worker 0 = global rank 2" in node1 and "local worker 1 = global rank 3" in node1
    assert "all 4 ranks finished" in node1 and "all 4 ranks finished" in run.nodes[0].text()
    for node, rank in ((0, 0), (0, 1), (1, 2), (1, 3)):
        log = ranks_log(run, node, rank)
        assert "[rank %d] " % rank in log and "4 process(es), 2 steps/epoch of 8 images" in log
        assert summary_of(log)["rank"] == rank
        assert ("saved " in log) == (rank == 0)  # rank 0 alone checkpoints
    summary = summary_of(ranks_log(run, 0, 0))
    assert (summary["world_size"], summary["global_batch"], summary["global_step"]) == (4, 8, 2)
    assert summary["peak_lr"] == pytest.approx(1.6 * 8 / 256)
    assert (tmp_path / "dist" / "summary.json").is_file() and (tmp_path / "dist" / "resnet_ibn_a_tiny-e001.ckpt").is_file()

    dumps = [load_dumped_weights(tmp_path / ("dist.rank%d.npz" % r)) for r in range(4)]
    shards = [set(files) for _, files in dumps]
    assert all(len(s) == 4 for s in shards) and len(set().union(*shards)) == 16  # disjoint, all 16 images

    from train_helpers import run_module

    single = last_json(run_module("train", step + ["--device", "CPU", "--batch-size", "8", "--output-dir",
                                                   tmp_path / "single", "--dump-weights", tmp_path / "single.npz"]).stdout)
    assert single["world_size"] == 1 and single["global_step"] == 2 and single["peak_lr"] == summary["peak_lr"]
    reference, _ = load_dumped_weights(tmp_path / "single.npz")
    ranks_diff = max(max_weight_diff(dumps[0][0], d) for d, _ in dumps[1:])
    assert ranks_diff == 0.0
    assert_same_weights(dumps[0][0], reference, "distributed vs single process")


def test_a_killed_node_stops_every_node_and_the_run_resumes_exactly(hosts, sixteen_images, tmp_path, launch):
    """SIGKILL node 1's launcher in epoch 2: node 0's launcher names node 1 and exits
    non-zero, nothing of the run survives; both restarted with --resume latest end with
    the uninterrupted run's weights (shuffled, augmented: each epoch's order is rebuilt
    from its seed and the steps done are skipped; momentum and the lr schedule, which
    drops at epoch 1, continue from the checkpoint)."""
    args = TINY + ["--epochs", "2", "--batch-size", "2", "--lr", "0.05", "--milestones", "1", "--seed", "5",
                   "--save-every-steps", "1", "--train-dir", sixteen_images]  # 16 images / 2 ranks / batch 2: 4 steps per epoch
    straight = launch(hosts, "straight", 1, args + ["--output-dir", tmp_path / "straight",
                                                    "--dump-weights", tmp_path / "straight.npz"])
    straight.succeed()

    out = tmp_path / "interrupted"
    run = launch(hosts, "interrupted", 1, args + ["--output-dir", out], env={STEP_SLEEP_ENV: "0.5"})
    mid_epoch_2 = out / "resnet_ibn_a_tiny-e001-s00001.ckpt"
    deadline = time.monotonic() + 400
    while not mid_epoch_2.is_file():
        assert time.monotonic() < deadline and all(n.proc.poll() is None for n in run.nodes), run.outputs()
        time.sleep(0.1)
    alive = processes_with_env(MARKER_ENV, run.marker)
    assert len(alive) >= 7, alive  # 2 launchers, 2 msruns, guards and processes of 2 ranks and the scheduler
    run.nodes[1].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    codes = run.wait(timeout=120)
    stopped_s = time.monotonic() - killed
    print("node 0's launcher exited %.1f s after node 1's was killed" % stopped_s)
    assert stopped_s < HEARTBEAT_TIMEOUT_S  # seen from the closed connection, not a missed heartbeat
    assert codes[1] == -signal.SIGKILL and codes[0] == 1, run.outputs()
    assert "error: node 1 was lost: its launcher exited or was killed; every rank on every node was stopped" \
        in run.nodes[0].text()
    assert not run.survivors(), "processes of the run outlived its launchers"
    assert not (out / "summary.json").exists()

    resumed = launch(hosts, "resumed", 1, args + ["--output-dir", out, "--resume", "latest",
                                                  "--dump-weights", tmp_path / "resumed.npz"])
    resumed.succeed()
    rank0 = ranks_log(resumed, 0, 0)
    latest = next(ln for ln in resumed.nodes[0].text().splitlines() if "--resume latest is" in ln)
    assert latest.endswith(tuple("resnet_ibn_a_tiny-e001-s%05d.ckpt" % s for s in (1, 2, 3))), latest
    assert latest.split(" is ")[1] in resumed.nodes[1].text()  # both nodes resumed from the same file
    assert "resumed from %s at epoch 1, step " % latest.split(" is ")[1] in rank0
    assert "lr 0.005000" in rank0 and "lr 0.050000" not in rank0  # epoch 2 of the schedule: x0.1 after milestone 1
    summary = summary_of(rank0)
    assert summary["start_epoch"] == 1 and summary["global_step"] == 8 and summary["epochs_completed"] == 2
    for rank in (0, 1):
        assert_same_weights(load_dumped_weights(tmp_path / ("resumed.rank%d.npz" % rank))[0],
                            load_dumped_weights(tmp_path / ("straight.rank%d.npz" % rank))[0],
                            "rank %d resumed vs uninterrupted" % rank)


def test_a_failing_rank_stops_every_node_and_each_launcher_shows_its_error(sixteen_images, tmp_path, launch):
    """Rank 1 (node 1) raises after its first step: both launchers exit non-zero naming
    rank 1 on node 1, with its traceback; nothing survives. Loopback, --master-addr a host
    name: node 1's ranks are started by its launcher (no second scheduler), at the address."""
    run = launch(loopback_hosts(loopback_name()), "failing", 1, TINY + [
        "--epochs", "3", "--batch-size", "2", "--train-dir", sixteen_images, "--output-dir", tmp_path / "out"],
        env={FAULT_ENV: "1"})
    codes = run.wait(timeout=400)
    assert codes == [1, 1], run.outputs()
    assert "started without msrun" in run.nodes[1].text()
    for node in run.nodes:
        text = node.text()
        assert "==== rank 1 on node 1 failed (exit status 1); last lines of %s" % (run.logs[1] / "worker_1.log") in text
        assert "RuntimeError: fault injected on rank 1 after step 1" in text
        assert "error: rank 1 on node 1 failed (exit status 1); every rank on every node was stopped" in text
        assert "rank 0 on node 0 failed" not in text
    assert "epochs_completed" not in ranks_log(run, 0, 0)  # rank 0 did not train on alone
    assert not run.survivors()


def test_a_killed_guard_stops_a_node_without_msrun_at_once(tmp_path):
    """On a node whose ranks its launcher starts itself (several nodes on one host), a guard
    SIGKILLed is seen at once, though the node's other rank would wait for its peer in the
    cluster until the timeout (no scheduler here: both ranks wait to join)."""
    plan = _plan("--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "2", "--device", "CPU",
                 "--master-port", str(free_port_pair(loopback_hosts())), "--log-dir", str(tmp_path / "logs"),
                 "--cluster-timeout", "120")
    marker = uuid.uuid4().hex
    (tmp_path / "shim").mkdir()
    env = dict(_environment(tmp_path / "shim"), **{MARKER_ENV: marker})
    local = LocalRun(plan, ["--device", "CPU", "--train-dir", str(tmp_path)], env, direct=True, tail_lines=5)
    try:
        deadline = time.monotonic() + 60
        while any(read_status(plan.status_dir, name) is None for name in plan.statuses()):
            assert time.monotonic() < deadline and local.poll() is None
            time.sleep(0.05)
        os.kill(read_status(plan.status_dir, "rank_2")["pid"], signal.SIGKILL)
        killed, failure = time.monotonic(), None
        while failure is None and time.monotonic() - killed < 20:
            failure = local.poll()
            time.sleep(0.1)
        assert failure is not None, "the node waited on its other rank"
        assert failure["title"] == "rank 2 on node 1 failed (ended without an exit status (killed))", failure
    finally:
        assert local.stop() == []
    assert not processes_with_env(MARKER_ENV, marker)


# ----------------------------------------------------------------------------- joining


def _launch_alone(node_rank: int, port: int, tmp: Path, timeout: int, extra: Sequence[str] = (),
                  master_addr: str = "127.0.0.1", env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "train.distributed", "--nnodes", "2", "--node-rank", str(node_rank), "--nproc", "1",
         "--device", "CPU", "--master-addr", master_addr, "--master-port", str(port), "--cluster-timeout", str(timeout),
         "--log-dir", str(tmp / ("logs%d" % node_rank)), "--", "--train-dir", str(tmp), *extra],
        cwd=str(REPO), env=subprocess_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _waiting_launcher(tmp: Path, temp_dir: Path) -> subprocess.Popen:
    """A master launcher (its shim directory made) waiting for a node that never comes."""
    proc = _launch_alone(0, free_port_pair(loopback_hosts()), tmp, timeout=120, env={"TMPDIR": str(temp_dir)})
    watchdog = threading.Timer(120, proc.kill)  # a launcher that never says it waits must not hang the suite
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("node 0: waiting for all 2 nodes"):
                return proc
    finally:
        watchdog.cancel()
    proc.kill()
    raise AssertionError("the launcher ended before waiting: %s" % proc.communicate()[1])


def test_a_sigkilled_launchers_shim_directory_is_removed_by_the_next_launcher(tmp_path):
    """SIGKILL cannot be caught, so a killed launcher leaves its temporary `python` shim
    directory behind; the next launcher removes it, and keeps a live launcher's."""
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    shim_dirs = lambda: set(temp_dir.glob(SHIM_DIR_PREFIX + "*"))  # noqa: E731
    procs = []
    try:
        killed = _waiting_launcher(tmp_path, temp_dir)
        procs.append(killed)
        (killed_dir,) = shim_dirs()
        live = _waiting_launcher(tmp_path, temp_dir)
        procs.append(live)
        (live_dir,) = shim_dirs() - {killed_dir}
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        assert shim_dirs() == {killed_dir, live_dir}  # what SIGKILL leaves
        procs.append(_waiting_launcher(tmp_path, temp_dir))
        assert not killed_dir.exists(), "the killed launcher's shim directory is still there"
        assert len(shim_dirs() - {live_dir}) == 1  # the new launcher's
        assert live_dir.is_dir()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.communicate(timeout=60)
    assert shim_dirs() == set()  # stopped launchers remove their own


@pytest.mark.parametrize("present", [0, 1])
def test_a_node_that_never_joins_is_named_after_the_cluster_timeout(tmp_path, present):
    port = free_port_pair(loopback_hosts())
    start = time.monotonic()
    proc = _launch_alone(present, port, tmp_path, timeout=3)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    if present == 0:
        assert last == "error: node rank 1 did not join within 3 s (--cluster-timeout); joined: node rank 0"
    else:
        assert last.startswith("error: node rank 1 could not reach the master (node rank 0) at 127.0.0.1:%d "
                               "within 3 s (--cluster-timeout)" % (port + 1))
    assert 3 <= elapsed < 30
    assert "msrun:" not in out  # nothing was started


def test_nodes_resuming_from_different_checkpoints_are_refused(tmp_path):
    """--resume latest on every node must find the same file (a shared --output-dir)."""
    port = free_port_pair(loopback_hosts())
    procs = []
    for node, step in ((0, 1), (1, 2)):
        out = tmp_path / ("out%d" % node)
        out.mkdir()
        (out / ("resnet_ibn_a_tiny-e000-s%05d.ckpt" % step)).write_bytes(b"")  # only the names are read here
        procs.append(_launch_alone(node, port, tmp_path, 60, ["--arch", "resnet_ibn_a_tiny", "--output-dir", str(out),
                                                              "--resume", "latest"]))
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], results
    master_err = results[0][1]
    assert "node rank 1 has resume '%s' but node rank 0 has '%s'" % (
        tmp_path / "out1" / "resnet_ibn_a_tiny-e000-s00002.ckpt", tmp_path / "out0" / "resnet_ibn_a_tiny-e000-s00001.ckpt") \
        in master_err
    assert "filesystem shared by all nodes" in master_err
    assert "the master (node rank 0) refused to start" in results[1][1]


def test_resume_latest_is_the_furthest_of_checkpoints_written_within_one_timestamp_tick(tmp_path):
    """Where timestamps are coarse (1 s on some NFS servers and ext3, 2 s on FAT), step
    checkpoints written within one tick share their mtime: latest is then the furthest of
    them (the newest written, as without the tie), not the first found."""
    from train.checkpoint import resume_checkpoint

    tick = 1_700_000_000 * 10**9
    for name, mtime in (("e000-s00003", tick - 10**9), ("e001", tick), ("e001-s00002", tick), ("e001-s00001", tick)):
        path = tmp_path / ("resnet_ibn_a_tiny-%s.ckpt" % name)
        path.write_bytes(b"")  # only the names and times are read here
        os.utime(path, ns=(mtime, mtime))
    assert resume_checkpoint("latest", tmp_path, "resnet_ibn_a_tiny") == tmp_path / "resnet_ibn_a_tiny-e001-s00002.ckpt"


def test_nodes_with_different_training_settings_are_refused(tmp_path):
    """A node restarted with other arguments after -- (or another --config file) would train
    another model: its ranks' gradients averaged with the others', its own lr applied to them.
    Refused before any rank starts, naming the settings that differ."""
    port = free_port_pair(loopback_hosts())
    # --workers and --debug are the node's own business, not named
    procs = [_launch_alone(node, port, tmp_path, 60, ["--batch-size", batch, "--lr", "0.05", "--workers", workers]
                           + debug)
             for node, batch, workers, debug in ((0, "2", "1", []), (1, "4", "2", ["--debug"]))]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], results
    assert results[0][1].strip().splitlines()[-1] == (
        "error: node rank 1's training settings differ from node rank 0's: batch_size 4 (node rank 0: 2); "
        "give every node the same arguments after -- (and the same --config file)")
    assert "the master (node rank 0) refused to start" in results[1][1]
    assert "msrun:" not in results[0][0] + results[1][0]


def test_one_node_may_debug():
    """--debug (tracebacks in this node's ranks' logs) is node-local: two nodes differing only
    in it share every setting the master compares."""
    common = ["--train-dir", "photos", "--batch-size", "2", "--lr", "0.05"]
    assert _agreed_settings(_training_settings(common + ["--debug"])) == _agreed_settings(_training_settings(common))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback address (::1) here")
def test_nodes_meet_at_an_ipv6_master_address_written_either_way(tmp_path):
    """msrun takes an IPv6 --master-addr, bracketed or not; the launchers must meet there too
    (node 0 listening on ::1, node 1 calling [::1]): they do, and refuse their differing settings."""
    port = free_port_pair(loopback_hosts())
    procs = [_launch_alone(node, port, tmp_path, 20, ["--batch-size", batch], master_addr=addr)
             for node, batch, addr in ((0, "2", "::1"), (1, "4", "[::1]"))]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], results
    assert "node 0 of 2 (CPU): global rank 0 of 2; master [::1]:%d" % port in results[0][0]
    assert "node rank 1's training settings differ from node rank 0's: batch_size 4 (node rank 0: 2)" in results[0][1]
    assert "the master (node rank 0) refused to start" in results[1][1]


# ----------------------------------------------------------------------------- the control channel


SHORT_HEARTBEAT_TIMEOUT_S = 1.5


def _hello(node: int) -> Dict:
    return {"node": node, "nnodes": 2, "nproc": 1, "device": "CPU", "resume": None,
            "heartbeat_timeout": SHORT_HEARTBEAT_TIMEOUT_S}


def _closed_by_other_end(sock: socket.socket, within: float) -> bool:
    """Whether the other end closes ``sock`` within ``within`` seconds (what it sends is discarded)."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except ConnectionError:
        return True
    return False


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the master hung up mid-way: what the test wants to see
        pass


def _line(sock: socket.socket, timeout: float = 10.0) -> Dict:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "the master closed the connection"
        data += chunk
    return json.loads(data.splitlines()[-1])


@pytest.fixture
def master():
    """Node rank 0's end of the control channel on a free loopback port, gathering in a thread
    (``.port``, ``.gathered``: an Event, ``.error``); closed at teardown."""
    port = free_port_pair(loopback_hosts())
    link = rendezvous.Master("127.0.0.1", port, _hello(0), hello_timeout=1.0)
    link.port, link.gathered, link.error = port, threading.Event(), None

    def gather():
        try:
            link.gather(60)
        except rendezvous.RendezvousError as exc:
            link.error = exc
        link.gathered.set()

    threading.Thread(target=gather, daemon=True).start()
    yield link
    link.gathered.wait(60)
    link.close(linger=0)


def test_the_control_channel_sheds_floods_slow_clients_and_garbage_and_still_gathers(master):
    """A connection that floods one endless line, one that trickles a byte at a time and one
    that sends lines that are not ours are each hung up on (the first at once, the others when
    they have not said hello within the hello timeout); the real node then joins."""
    flood, loris, garbage = (socket.create_connection(("127.0.0.1", master.port)) for _ in range(3))
    _send_quietly(flood, b"x" * (rendezvous.MAX_LINE_BYTES + (1 << 20)))
    assert _closed_by_other_end(flood, 5.0), "an endless line was buffered without bound"
    _send_quietly(garbage, b"\xff\xfe not json\n[1, 2]\n{\"type\": 5}\n{\"type\": \"failed\"}\n")
    start = time.monotonic()
    while time.monotonic() - start < 3.0 and not master.gathered.is_set():
        _send_quietly(loris, b"{")
        if _closed_by_other_end(loris, 0.2):
            break
    assert time.monotonic() - start < 3.0, "a client that never finishes its hello was kept"
    assert _closed_by_other_end(garbage, 3.0)
    assert not master.gathered.is_set()
    member = rendezvous.Member("127.0.0.1", master.port, _hello(1), timeout=10)
    assert master.gathered.wait(10) and master.error is None
    member.close()


def test_a_member_reporting_a_failure_it_does_not_describe_still_stops_the_run(master):
    node1 = socket.create_connection(("127.0.0.1", master.port))
    node1.sendall(json.dumps(dict(_hello(1), type="hello")).encode() + b"\n")
    assert _line(node1)["type"] == "start" and master.gathered.wait(10) and master.error is None
    node1.sendall(b'{"type": "failed"}\n')
    deadline = time.monotonic() + 10
    events: List = []
    while not events and time.monotonic() < deadline:
        events = master.events(0.2)
    assert events and events[0][0] == "failed" and events[0][1]["title"].startswith("node 1 "), events
    abort = _line(node1)
    while abort["type"] == "beat":
        abort = _line(node1)
    assert abort["type"] == "abort" and abort["failure"] == events[0][1]


def _events_until_one(link, within: float = 10.0) -> List:
    deadline = time.monotonic() + within
    events: List = []
    while not events and time.monotonic() < deadline:
        events = link.events(0.2)
    return events


def test_a_node_that_falls_silent_is_named_lost_after_the_heartbeat_timeout(master):
    """A firewall that starts dropping packets, a frozen launcher: no close, just silence.
    The master names the silent member (and a member names a silent master) once
    --heartbeat-timeout has passed without a word."""
    node1 = socket.create_connection(("127.0.0.1", master.port))
    node1.sendall(json.dumps(dict(_hello(1), type="hello")).encode() + b"\n")
    assert _line(node1)["type"] == "start" and master.gathered.wait(10) and master.error is None
    silent_since = time.monotonic()
    events = _events_until_one(master)
    assert time.monotonic() - silent_since >= SHORT_HEARTBEAT_TIMEOUT_S
    assert events == [("failed", rendezvous.lost_node(1, "no word from its launcher for %g s"
                                                      % SHORT_HEARTBEAT_TIMEOUT_S))], events

    with socket.create_server(("127.0.0.1", 0)) as server:  # a master that starts the run, then falls silent
        def start_and_fall_silent():
            conn, _ = server.accept()
            assert _line(conn)["type"] == "hello"
            conn.sendall(b'{"type": "start"}\n')
            time.sleep(SHORT_HEARTBEAT_TIMEOUT_S * 4)
            conn.close()

        threading.Thread(target=start_and_fall_silent, daemon=True).start()
        member = rendezvous.Member("127.0.0.1", server.getsockname()[1], _hello(1), timeout=10)
        silent_since = time.monotonic()
        events = _events_until_one(member)
        member.close()
    assert time.monotonic() - silent_since >= SHORT_HEARTBEAT_TIMEOUT_S - 0.5  # silent since the start was sent
    assert events == [("failed", rendezvous.lost_node(0, "no word from the launcher of the master for %g s"
                                                      % SHORT_HEARTBEAT_TIMEOUT_S))], events
