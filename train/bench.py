"""``python -m train.bench``: training throughput on this machine's CPU, MindSpore vs PyTorch.

Three measurements in one run, medians over the timed steps:

- ``mindspore``: one training step of ``--arch`` (default resnet50_ibn_a), batch 16,
  224 px, graph mode: forward, softmax cross-entropy, backward, SGD momentum 0.9 with
  weight decay (``TrainOneStepCell``); the first step (graph compile) is not timed.
- ``torch``: the same model from the tests' PyTorch reference (``tests/torch_reference.py``,
  imported by path; PyTorch is a test/bench-only dependency), the same step, eager mode.
- ``data``: the training input pipeline alone (``train.data.train_dataset``: decode,
  RandomCropDecodeResize 224, flip, normalise, HWC2CHW, batch 16) over an ImageNet-like
  ImageFolder built from scikit-image photographs (``ibnedge.corpus.imagenet_like``).

Each framework runs in its own process (their thread pools never compute at once), and
their steps are interleaved round by round: the speed of a shared 2-core VM drifts by
10-20% over minutes, which separate back-to-back runs would read as a framework
difference. ``mindspore_vs_torch`` is the median of the per-round ratios.

The input pipeline is not the bottleneck when ``data img/s >= 3 x mindspore img/s``.

MindSpore runs with oneDNN capped at AVX2 on x86-64 unless ``ONEDNN_MAX_CPU_ISA`` is set
(``ibnedge.cpu_isa``: its AVX-512 kernels are many times slower); each training worker records the
cap in force (``onednn_max_cpu_isa``; PyTorch, which also uses oneDNN, gets only what the
environment says). ``--compare-isa ALL,AVX512_CORE`` adds a MindSpore worker per cap to the
same rounds; ``mindspore@CAP_vs_mindspore`` is its speed relative to the default worker
(median of per-round ratios; below 1: slower), as ``mindspore_vs_torch`` is MindSpore's.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ibnedge.cpu_isa import DEFAULT_CPU_ISA_CAP, ISA_VARIABLES, cpu_isa_cap
from ibnedge.errors import UserError, add_debug_flag, run_reporting

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = PROJECT_ROOT / "tests" / "torch_reference.py"
# Lets the previous step's worker threads go idle (OpenMP spin-waits after a parallel region).
PAUSE_BETWEEN_STEPS_S = 0.5


def _mindspore_step(arch: str, batch: int, size: int) -> Callable[[], float]:
    """One MindSpore training step of ``arch`` (graph mode), returning the loss."""
    import mindspore as ms
    from mindspore import nn

    from .context import setup_context
    from .models import create_model

    setup_context("CPU", "graph")  # as train sets it up, the oneDNN ISA cap included
    ms.set_seed(0)
    net = create_model(arch, num_classes=1000)
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), optimizer)
    step.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 1000, size=batch).astype(np.int32))
    return lambda: float(step(x, y).asnumpy())


class BenchSetupError(UserError, RuntimeError):
    """The benchmark cannot run here; the message says what is missing."""


def _torch_reference():
    if not TORCH_REFERENCE.is_file():
        raise BenchSetupError("%s: the PyTorch reference ships with the tests; run from a source checkout" % TORCH_REFERENCE)
    spec = importlib.util.spec_from_file_location("torch_reference", str(TORCH_REFERENCE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_step(arch: str, batch: int, size: int) -> Callable[[], float]:
    """The same step in PyTorch (eager), on all cores, returning the loss."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    net = _torch_reference().build(arch, num_classes=1000).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 1000, (batch,), generator=gen)

    def one_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return float(loss)

    return one_step


STEP_BUILDERS = {"mindspore": _mindspore_step, "torch": _torch_step}


def serve_steps(framework: str, arch: str, batch: int, size: int) -> None:
    """Worker: build the step, run it once (graph compile, warm-up), then time one step per
    ``step`` line on stdin, answering one JSON line each; exits at end of input."""
    one_step = STEP_BUILDERS[framework](arch, batch, size)
    start = time.perf_counter()
    loss = one_step()
    print(json.dumps({"first_step_s": time.perf_counter() - start, "loss": loss,
                      "onednn_max_cpu_isa": cpu_isa_cap() or "none"}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        loss = one_step()
        print(json.dumps({"step_s": time.perf_counter() - start, "loss": loss}), flush=True)


class _Worker:
    """A ``serve_steps`` process driven over pipes; ``isa`` set: MindSpore with that oneDNN cap."""

    def __init__(self, framework: str, args, isa: Optional[str] = None) -> None:
        cmd = [sys.executable, "-m", "train.bench", "--serve", framework, "--arch", args.arch,
               "--batch", str(args.batch), "--size", str(args.size)]
        self.framework = framework
        self.label = "%s@%s" % (framework, isa) if isa else framework
        env = _worker_env()
        if isa:
            env.pop(ISA_VARIABLES[1], None)
            env[ISA_VARIABLES[0]] = isa
        # stderr to a file, not a pipe: nobody reads it while the worker runs, and a full pipe
        # (MindSpore's logs at a verbose GLOG_v) would block the worker forever.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        first = self._answer()
        self.first_step_s, self.isa = first["first_step_s"], first["onednn_max_cpu_isa"]

    def _answer(self) -> Dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.log.seek(0)
                raise RuntimeError("bench worker %s exited (%s):\n%s"
                                   % (self.label, self.proc.returncode, self.log.read()[-3000:]))
            if line.startswith("{"):
                return json.loads(line)

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return float(self._answer()["step_s"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def bench_training(frameworks: Sequence[str], args, compare_isa: Sequence[str] = ()) -> Dict[str, Dict]:
    """Interleaved timing: each round times one step of every worker (a framework, or
    MindSpore under one of ``compare_isa``), alternating which goes first, so that drift in
    this machine's speed hits all of them alike.

    Each worker runs in its own process, started and warmed up one after the other;
    while one steps, the others block on a pipe read (their thread pools idle).
    """
    workers: List[_Worker] = []
    try:
        for framework in frameworks:
            workers.append(_Worker(framework, args))
        for isa in compare_isa:
            workers.append(_Worker("mindspore", args, isa))
        seconds: Dict[str, List[float]] = {w.label: [] for w in workers}
        for round_index in range(args.steps):
            order = workers if round_index % 2 == 0 else workers[::-1]
            for worker in order:
                time.sleep(PAUSE_BETWEEN_STEPS_S)
                seconds[worker.label].append(worker.step())
    finally:
        for worker in workers:
            worker.close()
    results = {}
    for worker in workers:
        steps = seconds[worker.label]
        med = float(np.median(steps))
        results[worker.label] = {"img_per_s": args.batch / med, "median_step_s": med, "steps": len(steps),
                                 "step_s": steps, "first_step_s": worker.first_step_s,
                                 "onednn_max_cpu_isa": worker.isa}
    # Per-round ratios: all steps of a round ran under the same machine conditions.
    for label, base in _compared(frameworks, compare_isa):
        results[label]["vs_%s_per_round" % base] = [b / s for s, b in zip(seconds[label], seconds[base])]
    return results


def _compared(frameworks: Sequence[str], compare_isa: Sequence[str]) -> List[tuple]:
    """``(worker, the worker it is compared with)``: the speed of the first relative to the second."""
    pairs = [("mindspore", "torch")] if {"mindspore", "torch"} <= set(frameworks) else []
    return pairs + [("mindspore@%s" % isa, "mindspore") for isa in compare_isa]


def bench_data(batch: int, size: int, images: int, epochs: int, workers: int) -> Dict[str, float]:
    from ibnedge.corpus import default_cache_dir, imagenet_like

    from . import data

    files = imagenet_like(default_cache_dir(), count=images)
    with tempfile.TemporaryDirectory(prefix="ibnedge-bench-") as tmp:
        root = Path(tmp)
        for i, path in enumerate(files):  # an ImageFolder of 4 classes over the corpus
            folder = root / ("class_%d" % (i % 4))
            folder.mkdir(exist_ok=True)
            (folder / path.name).symlink_to(path)
        folder = data.scan_image_folder(root, workers=workers, report=lambda m: None)
        seconds, rows = [], 0
        for epoch in range(epochs + 1):
            batches = data.train_dataset(folder, batch, size, seed=0, epoch=epoch, workers=workers)
            iterator = batches.create_tuple_iterator(output_numpy=True, num_epochs=1)
            next(iterator)  # pipeline start-up (worker threads) is not throughput
            start, count = time.perf_counter(), 0
            for image, _ in iterator:
                count += image.shape[0]
            if epoch:  # the first epoch warms the page cache
                seconds.append(time.perf_counter() - start)
                rows += count
    return {"img_per_s": rows / sum(seconds), "images_per_epoch": rows / epochs, "workers": workers,
            "corpus_images": len(files)}


def _worker_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("GLOG_v", "3")
    return env


def _run_data_part(args) -> Dict:
    """The input pipeline in a fresh interpreter (no framework thread pool beside it)."""
    cmd = [sys.executable, "-m", "train.bench", "--serve", "data", "--batch", str(args.batch),
           "--size", str(args.size), "--images", str(args.images), "--workers", str(args.workers)]
    proc = subprocess.run(cmd, env=_worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError("bench part data failed (%d):\n%s" % (proc.returncode, (proc.stdout + proc.stderr)[-3000:]))
    return json.loads(lines[-1])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50_ibn_a", help="model (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="input size (default: %(default)s)")
    p.add_argument("--steps", type=int, default=7, help="timed training steps per framework (default: %(default)s)")
    p.add_argument("--images", type=int, default=96, help="images in the data-loading corpus (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode workers (default: all cores)")
    p.add_argument("--parts", default="mindspore,torch,data", help="which measurements (default: %(default)s)")
    p.add_argument("--compare-isa", default="", metavar="CAP[,CAP...]",
                   help="MindSpore runs with %s=%s on x86-64 unless it is set; also time it with each CAP (ALL: "
                        "no cap) in the same rounds" % (ISA_VARIABLES[0], DEFAULT_CPU_ISA_CAP))
    p.add_argument("--json-out", help="also write the results here")
    p.add_argument("--serve", choices=("mindspore", "torch", "data"), help=argparse.SUPPRESS)  # internal worker
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.images < 4 * args.batch:
        p.error("--images must be at least 4 batches (%d) so that throughput excludes pipeline start-up" % (4 * args.batch))
    if args.steps < 1:
        p.error("--steps must be at least 1")
    parts, compare_isa = _names(p, "--parts", args.parts), _names(p, "--compare-isa", args.compare_isa)
    unknown = sorted(set(parts) - {"mindspore", "torch", "data"})
    if unknown:
        p.error("unknown part(s) %s: choose from mindspore, torch, data" % ", ".join(unknown))
    if compare_isa and "mindspore" not in parts:
        p.error("--compare-isa compares against the mindspore part: add it to --parts")
    return run_reporting(lambda: _bench_command(args, parts, compare_isa), "error: ", args.debug)


def _names(p: argparse.ArgumentParser, flag: str, text: str) -> List[str]:
    """A comma-separated list of workers; each once: a worker's steps are kept under its name,
    so one named twice would mix two workers' steps and pair them with the wrong rounds."""
    names = [s for s in text.split(",") if s]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        p.error("%s names %s more than once" % (flag, ", ".join(twice)))
    return names


def _bench_command(args: argparse.Namespace, parts: List[str], compare_isa: List[str]) -> int:
    if args.serve == "data":
        print(json.dumps(bench_data(args.batch, args.size, args.images, 3, args.workers)), flush=True)
        return 0
    if args.serve:
        serve_steps(args.serve, args.arch, args.batch, args.size)
        return 0

    frameworks = [part for part in parts if part in STEP_BUILDERS]
    results: Dict[str, Dict] = {}
    if frameworks:
        print("timing %s: %d interleaved rounds of one step each ..." % (" and ".join(frameworks), args.steps),
              flush=True)
        results = bench_training(frameworks, args, compare_isa)
    if "data" in parts:
        print("timing the input pipeline ...", flush=True)
        results["data"] = _run_data_part(args)
    summary = {"arch": args.arch, "batch": args.batch, "size": args.size, "cpu_cores": os.cpu_count(), **results}
    ratio_keys = []
    for label, base in _compared(frameworks, compare_isa):
        ratio_keys.append("%s_vs_%s" % (label, base))
        summary[ratio_keys[-1]] = float(np.median(results[label]["vs_%s_per_round" % base]))
    if "mindspore" in results and "data" in results:
        ratio_keys.append("data_vs_mindspore_step")
        summary["data_vs_mindspore_step"] = results["data"]["img_per_s"] / results["mindspore"]["img_per_s"]
    print("\n%s, batch %d, %d px (img/s; ratios are medians of per-round ratios)" % (args.arch, args.batch, args.size))
    for part in results:
        isa = results[part].get("onednn_max_cpu_isa")
        print("  %-40s %10.2f%s" % (part, results[part]["img_per_s"], "  (oneDNN ISA cap: %s)" % isa if isa else ""))
    for key in ratio_keys:
        print("  %-40s %10.2fx" % (key, summary[key]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
