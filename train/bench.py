"""``python -m train.bench``: training throughput on this machine's CPU, MindSpore vs PyTorch.

Three measurements in one run, each in its own fresh interpreter (so the frameworks'
thread pools never compete), medians over the timed steps:

- ``mindspore``: one training step of ``--arch`` (default resnet50_ibn_a), batch 16,
  224 px, graph mode: forward, softmax cross-entropy, backward, SGD momentum 0.9 with
  weight decay (``TrainOneStepCell``); the first step (graph compile) is not timed.
- ``torch``: the same model from the tests' PyTorch reference (``tests/torch_reference.py``,
  imported by path; PyTorch is a test/bench-only dependency), the same step, eager mode.
- ``data``: the training input pipeline alone (``train.data.train_dataset``: decode,
  RandomCropDecodeResize 224, flip, normalise, HWC2CHW, batch 16) over an ImageNet-like
  ImageFolder built from scikit-image photographs (``ibnedge.corpus.imagenet_like``).

The input pipeline is not the bottleneck when ``data img/s >= 3 x mindspore img/s``.
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
from typing import Dict, List, Optional

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = PROJECT_ROOT / "tests" / "torch_reference.py"


def _median_rate(seconds: List[float], batch: int) -> Dict[str, float]:
    med = float(np.median(seconds))
    return {"img_per_s": batch / med, "median_step_s": med, "steps": len(seconds)}


def bench_mindspore(arch: str, batch: int, size: int, steps: int) -> Dict[str, float]:
    import mindspore as ms
    from mindspore import nn

    from .models import create_model

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    net = create_model(arch, num_classes=1000)
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), optimizer)
    step.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 1000, size=batch).astype(np.int32))
    start = time.perf_counter()
    step(x, y).asnumpy()
    compile_s = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y).asnumpy()
        seconds.append(time.perf_counter() - start)
    return dict(_median_rate(seconds, batch), first_step_s=compile_s)


def _torch_reference():
    if not TORCH_REFERENCE.is_file():
        raise FileNotFoundError("%s: the PyTorch reference ships with the tests; run from a source checkout" % TORCH_REFERENCE)
    spec = importlib.util.spec_from_file_location("torch_reference", str(TORCH_REFERENCE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_torch(arch: str, batch: int, size: int, steps: int) -> Dict[str, float]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    net = _torch_reference().build(arch, num_classes=1000).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 1000, (batch,), generator=gen)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return float(loss)

    start = time.perf_counter()
    one_step()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        seconds.append(time.perf_counter() - start)
    return dict(_median_rate(seconds, batch), first_step_s=first, threads=torch.get_num_threads())


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


def _run_part(part: str, args) -> Dict:
    cmd = [sys.executable, "-m", "train.bench", "--part", part, "--arch", args.arch, "--batch", str(args.batch),
           "--size", str(args.size), "--steps", str(args.steps), "--images", str(args.images),
           "--workers", str(args.workers)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("GLOG_v", "3")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError("bench part %s failed (%d):\n%s" % (part, proc.returncode, (proc.stdout + proc.stderr)[-3000:]))
    return json.loads(lines[-1])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50_ibn_a", help="model (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="input size (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per framework (default: %(default)s)")
    p.add_argument("--images", type=int, default=96, help="images in the data-loading corpus (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode workers (default: all cores)")
    p.add_argument("--parts", default="mindspore,torch,data", help="which measurements (default: %(default)s)")
    p.add_argument("--json-out", help="also write the results here")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: one measurement in this process
    args = p.parse_args(argv)
    if args.images < 4 * args.batch:
        p.error("--images must be at least 4 batches (%d) so that throughput excludes pipeline start-up" % (4 * args.batch))

    if args.part:
        if args.part == "mindspore":
            result = bench_mindspore(args.arch, args.batch, args.size, args.steps)
        elif args.part == "torch":
            result = bench_torch(args.arch, args.batch, args.size, args.steps)
        elif args.part == "data":
            result = bench_data(args.batch, args.size, args.images, 3, args.workers)
        else:
            p.error("unknown part %r" % args.part)
        print(json.dumps(result), flush=True)
        return 0

    results: Dict[str, Dict] = {}
    for part in [s for s in args.parts.split(",") if s]:
        print("measuring %s ..." % part, flush=True)
        results[part] = _run_part(part, args)
        print("  %s: %.2f img/s %s" % (part, results[part]["img_per_s"], json.dumps(results[part])), flush=True)
    summary = {"arch": args.arch, "batch": args.batch, "size": args.size, "cpu_cores": os.cpu_count(), **results}
    if "mindspore" in results and "torch" in results:
        summary["mindspore_vs_torch"] = results["mindspore"]["img_per_s"] / results["torch"]["img_per_s"]
    if "mindspore" in results and "data" in results:
        summary["data_vs_mindspore_step"] = results["data"]["img_per_s"] / results["mindspore"]["img_per_s"]
    print("\n%-34s %10s" % ("training img/s, %s, batch %d, %d px" % (args.arch, args.batch, args.size), ""))
    for part in results:
        print("  %-32s %10.2f" % (part, results[part]["img_per_s"]))
    for key in ("mindspore_vs_torch", "data_vs_mindspore_step"):
        if key in summary:
            print("  %-32s %10.2fx" % (key, summary[key]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
