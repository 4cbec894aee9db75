"""``python -m train.eval``: top-1/top-5 accuracy of a checkpoint on an ImageFolder.

The checkpoint says what it is (architecture, class names, input size: see
``train.checkpoint``); the validation folders must be among its classes. Official
``.pth`` weights are converted in memory (pass ``--arch`` or let the converter infer it;
class folders are then taken as indices into the 1000 ImageNet classes by WordNet id or
by position).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mindspore.train import Metric

from ibnedge.errors import run_reporting
from ibnedge.metadata import ModelMetadata

from . import config as settings
from . import data
from .checkpoint import CheckpointError


class TopKAccuracy(Metric):
    """Fraction of samples whose label is among the ``k`` largest logits.

    With fewer than ``k`` classes every label is (MindSpore's own TopKCategoricalAccuracy
    fails there). Ties are broken by class index (stable sort), like ``np.argsort(kind="stable")``.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError("k must be at least 1, got %d" % k)
        self.k = k
        self.clear()

    def clear(self) -> None:
        self._correct = 0
        self._count = 0

    def update(self, *inputs) -> None:
        if len(inputs) != 2:
            raise ValueError("TopKAccuracy.update takes (logits, labels), got %d inputs" % len(inputs))
        logits = self._convert_data(inputs[0])
        labels = self._convert_data(inputs[1]).astype(np.int64).reshape(-1)
        self._correct += int(topk_hits(logits, labels, self.k).sum())
        self._count += labels.shape[0]

    def eval(self) -> float:
        if self._count == 0:
            raise RuntimeError("TopKAccuracy: no samples were evaluated")
        return self._correct / self._count


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: label within the top ``k`` logits."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels.reshape(-1, 1)).any(axis=1)


def metrics() -> Dict[str, object]:
    return {"top_1_accuracy": TopKAccuracy(1), "top_5_accuracy": TopKAccuracy(5)}


def evaluate(net, dataset) -> Dict[str, float]:
    """Model.eval of ``net`` (eval mode) over ``dataset`` batches of (image, label)."""
    import mindspore as ms
    from mindspore import nn

    # With a loss, Model builds its standard eval network (logits and labels for the metrics).
    model = ms.Model(net, loss_fn=nn.CrossEntropyLoss(), metrics=metrics())
    result = model.eval(dataset, dataset_sink_mode=False)
    return {"top1": float(result["top_1_accuracy"]), "top5": float(result["top_5_accuracy"])}


def checkpoint_info(ckpt) -> ModelMetadata:
    """What a checkpoint (``read_checkpoint``) holds; one that cannot say is refused."""
    if ckpt.info is None:
        raise CheckpointError("%s does not say its architecture and it cannot be inferred; pass --arch" % ckpt.path)
    return ckpt.info


def build_network(ckpt, num_classes: Optional[int] = None):
    """The model a checkpoint describes (``read_checkpoint``), weights loaded, in eval mode."""
    from .checkpoint import load_into
    from .models import create_model

    info = checkpoint_info(ckpt)
    net = create_model(info.arch, num_classes=num_classes or info.num_classes or None)
    load_into(net, ckpt.params, str(ckpt.path), allow_new_head=False)
    net.set_train(False)
    return net


def with_explicit_sizes(info: ModelMetadata, cfg) -> ModelMetadata:
    """``info`` with the --image-size / --resize the user typed (the record says what the
    model was trained with; the command line may evaluate or export it at another size)."""
    explicit = cfg.explicit
    return info.with_input(crop=cfg.image_size if "image_size" in explicit else None,
                           resize=cfg.resize if "resize" in explicit else None)


def checkpoint_from_settings(cfg):
    """The ``Checkpoint`` that ``--checkpoint`` names; an explicit --arch must agree with it."""
    from .checkpoint import read_checkpoint

    return read_checkpoint(Path(cfg.checkpoint), arch=cfg.arch if "arch" in cfg.explicit else None)


def network_from_settings(cfg):
    """``(info, eval network)`` for ``--checkpoint`` (``train.eval``): explicit sizes
    override the checkpoint's own."""
    ckpt = checkpoint_from_settings(cfg)
    return with_explicit_sizes(checkpoint_info(ckpt), cfg), build_network(ckpt, cfg.num_classes)


def main(argv: Optional[List[str]] = None) -> int:
    cfg = settings.resolve(settings.eval_parser(), argv)
    return run_reporting(lambda: _evaluate_command(cfg), "error: ", cfg.debug)


def _evaluate_command(cfg: argparse.Namespace) -> int:
    from .context import setup_context

    if not cfg.checkpoint or not cfg.val_dir:
        print("error: --checkpoint and --val-dir are required", file=sys.stderr)
        return 2
    setup_context(cfg.device, cfg.mode)
    info, net = network_from_settings(cfg)
    classes = info.class_names
    if not classes:
        from ibnedge.metadata import imagenet_classes

        count = cfg.num_classes or info.num_classes
        classes = [w for w, _ in imagenet_classes()] if count == 1000 else ["%d" % i for i in range(count)]
    folder = data.scan_image_folder(Path(cfg.val_dir), classes=classes, check=cfg.check_images, workers=cfg.workers)
    print(data.describe(folder), flush=True)
    spec = info.preprocess
    dataset = data.eval_dataset(folder, cfg.batch_size, spec.crop, spec.resize, cfg.workers,
                                mean=spec.mean, std=spec.std)
    start = time.perf_counter()
    result = evaluate(net, dataset)
    seconds = time.perf_counter() - start
    result.update(
        checkpoint=str(cfg.checkpoint),
        arch=info.arch,
        images=len(folder),
        skipped=[str(b) for b in folder.bad],
        image_size=spec.crop[0] if spec.crop[0] == spec.crop[1] else list(spec.crop),
        resize=spec.resize,
        seconds=round(seconds, 3),
    )
    print("top-1 %.4f  top-5 %.4f  (%d images, %.1f s)" % (result["top1"], result["top5"], len(folder), seconds))
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
