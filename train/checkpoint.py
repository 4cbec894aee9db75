"""Checkpoints of training runs: weights, optimizer state, progress and what the model is.

A run checkpoint is the training network saved by ``mindspore.save_checkpoint``: the
model's parameters under their own names (``conv1.weight``, ...), the optimizer's
(``moments.*``, ``global_step``, ``learning_rate``), and appended entries
``epoch`` (completed epochs), ``step_in_epoch`` (steps done in the current epoch, 0 at
an epoch end) and the model record (``ibnedge.metadata.ModelMetadata`` as JSON, see
``train.model_info``): architecture, class names, preprocessing, origin, so evaluation and
export need nothing but the file.

Initial weights (``--pretrained``, ``train.eval --checkpoint``, ``train.export --checkpoint``)
may also be an official PyTorch ``.pth``: it is converted in memory by ``train.convert``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ibnedge import architectures
from ibnedge.errors import UserError
from ibnedge.metadata import ModelMetadata

from .model_info import checkpoint_entry, read_entry

_PROGRESS_KEYS = ("epoch", "step_in_epoch")
# Top-level names of classifier cells across the model families: parameters under these
# may be dropped when the class count changes.
HEAD_PREFIXES = ("fc.", "classifier.", "head.")
# ``--freeze stem``: the layers before the first stage, by family.
STEM_PREFIXES = ("conv1.", "bn1.", "features.conv0.", "features.norm0.")


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing or unreadable, or does not fit the model or the flags (--arch, --freeze)."""


@dataclass
class Checkpoint:
    """Parameters (numpy), progress and the model record read from a .ckpt or .pth file."""

    path: Path
    params: Dict[str, np.ndarray]
    info: Optional[ModelMetadata] = None
    epoch: int = 0
    step_in_epoch: int = 0
    extra: Dict[str, object] = field(default_factory=dict)


def read_checkpoint(path: Path, arch: Optional[str] = None) -> Checkpoint:
    """Read a MindSpore ``.ckpt`` or convert an official PyTorch ``.pth``.

    ``arch`` (the user's ``--arch``) must agree with what the file says it holds. A bare
    ``.ckpt`` without a model record (written by other tools, or by ``train.convert`` before
    it stored one) is described from ``arch`` or, failing that, from its parameter names and
    shapes, as converted official weights; ``info`` stays None only when neither works.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("%s: checkpoint not found" % path)
    if path.suffix in (".pth", ".pt", ".tar"):
        ckpt = _read_pth(path, arch)
    else:
        ckpt = _read_ckpt(path)
        if ckpt.info is None:
            ckpt.info = _describe_bare(ckpt.params, path, arch)
    if arch is not None and ckpt.info is not None and ckpt.info.arch != arch:
        raise CheckpointError("%s holds %s weights, not --arch %s" % (path, ckpt.info.arch, arch))
    return ckpt


def _read_ckpt(path: Path) -> Checkpoint:
    import mindspore as ms

    try:
        raw = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, TypeError) as exc:  # MindSpore's words for an unreadable file
        raise CheckpointError("%s is not a readable MindSpore checkpoint (%s)" % (path, str(exc).strip().splitlines()[0]
                                                                                  if str(exc).strip() else type(exc).__name__))
    params: Dict[str, np.ndarray] = {}
    info = None
    progress = {k: 0 for k in _PROGRESS_KEYS}
    for name, value in raw.items():
        if isinstance(value, str):
            info = read_entry(name, value, str(path)) or info
        elif name in _PROGRESS_KEYS:
            progress[name] = int(np.asarray(value.asnumpy()).reshape(()))
        else:
            params[name] = value.asnumpy()
    return Checkpoint(path, params, info, progress["epoch"], progress["step_in_epoch"])


def _describe_bare(params: Dict[str, np.ndarray], path: Path, arch: Optional[str]) -> Optional[ModelMetadata]:
    from .convert import torch_key_for

    as_torch = {torch_key_for(name): value for name, value in params.items()}
    if arch is None:
        try:
            arch = architectures.infer_arch(as_torch)
        except architectures.UnknownArchitecture:
            return None
    return ModelMetadata.official(arch, architectures.num_classes_of(as_torch), path.name)


def _read_pth(path: Path, arch: Optional[str]) -> Checkpoint:
    from .convert import convert_pth

    params, report = convert_pth(path, arch=arch, strict=True)
    info = ModelMetadata.official(report.arch, report.num_classes, path.name)
    return Checkpoint(path, dict(params), info)


def save_run_checkpoint(train_network, path: Path, info: ModelMetadata, epoch: int, step_in_epoch: int) -> Path:
    import mindspore as ms

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # save_checkpoint appends ".ckpt" to any other name, so the temporary name keeps it.
    tmp = path.with_name(path.stem + ".partial.ckpt")
    ms.save_checkpoint(
        train_network,
        str(tmp),
        append_dict=dict(checkpoint_entry(info), epoch=int(epoch), step_in_epoch=int(step_in_epoch)),
    )
    tmp.replace(path)
    return path


def _is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def load_into(net, params: Dict[str, np.ndarray], source: str, allow_new_head: bool = True,
              report=print) -> List[str]:
    """Copy ``params`` into ``net``'s parameters of the same name; returns the names loaded.

    Every backbone parameter must be present with the right shape. Classifier parameters
    whose shape differs (another class count) keep their fresh initialisation when
    ``allow_new_head``; that is reported. Checkpoint entries the model lacks (optimizer
    state) are ignored.
    """
    import mindspore as ms

    loaded, replaced, problems = [], [], []
    for p in net.get_parameters():
        value = params.get(p.name)
        if value is None:
            if _is_head(p.name) and allow_new_head:
                replaced.append("%s (new)" % p.name)
            else:
                problems.append("%s missing" % p.name)
            continue
        if tuple(value.shape) != tuple(p.shape):
            if _is_head(p.name) and allow_new_head:
                replaced.append("%s %s -> %s" % (p.name, "x".join(map(str, value.shape)), "x".join(map(str, p.shape))))
            else:
                problems.append("%s shape %s, model has %s" % (p.name, tuple(value.shape), tuple(p.shape)))
            continue
        p.set_data(ms.Tensor(value.astype(ms.dtype_to_nptype(p.dtype), copy=False)))
        loaded.append(p.name)
    if problems:
        raise CheckpointError(
            "%s does not fit the model (%d problems): %s; check --arch" % (source, len(problems), "; ".join(problems[:8]))
        )
    if replaced:
        report("%s: classifier replaced, trained from scratch: %s" % (source, ", ".join(replaced)))
    return loaded


def freeze(net, parts: Sequence[str]) -> List[str]:
    """Stop gradients for the named parts; returns the frozen parameter names.

    Parts: ``stem`` (layers before the first stage), ``backbone`` (all but the classifier),
    or any parameter-name prefix such as ``layer1`` or ``features.denseblock1``.
    """
    frozen = []
    names = [p.name for p in net.get_parameters()]
    for part in parts:
        if part == "stem":
            match = lambda n: n.startswith(STEM_PREFIXES)  # noqa: E731
        elif part == "backbone":
            match = lambda n: not _is_head(n)  # noqa: E731
        else:
            prefix = part.rstrip(".") + "."
            match = lambda n, prefix=prefix: n.startswith(prefix)  # noqa: E731
        hits = [n for n in names if match(n)]
        if not hits:
            raise CheckpointError("--freeze %s matches no parameter; use stem, backbone or a prefix such as layer1" % part)
        frozen.extend(hits)
    frozen_set = set(frozen)
    for p in net.get_parameters():
        if p.name in frozen_set:
            p.requires_grad = False
    # A frozen part keeps its BatchNorm running statistics too (they would drift otherwise).
    freeze_batch_norm(net, only=lambda bn: bn.gamma.name in frozen_set)
    return sorted(frozen_set)


def freeze_batch_norm(net, only=None) -> int:
    """BatchNorm layers normalise with, and keep, their running statistics; returns how many.

    In training mode they then behave as in eval mode (per-sample, so a data-parallel step
    equals a single-process step on the combined batch); gamma and beta still train.
    """
    import mindspore.nn as nn

    count = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and (only is None or only(cell)):
            cell.use_batch_statistics = False
            count += 1
    return count


def trainable_arrays(net) -> Dict[str, np.ndarray]:
    return {p.name: p.asnumpy() for p in net.trainable_params()}


def run_checkpoint_name(arch: str, epoch: int, step_in_epoch: int) -> str:
    """``<arch>-e<completed epochs>[-s<steps into the next epoch>].ckpt``."""
    name = "%s-e%03d" % (arch, epoch)
    if step_in_epoch:
        name += "-s%05d" % step_in_epoch
    return name + ".ckpt"


_RUN_CHECKPOINT = re.compile(r"-e(\d+)(?:-s(\d+))?\.ckpt$")


def run_checkpoint_progress(path: Path) -> Tuple[int, int]:
    """(completed epochs, steps into the next) from a ``run_checkpoint_name``."""
    match = _RUN_CHECKPOINT.search(Path(path).name)
    if match is None:
        raise CheckpointError("%s is not named like a run checkpoint (<arch>-eNNN[-sNNNNN].ckpt)" % path)
    return int(match.group(1)), int(match.group(2) or 0)


def run_checkpoints(directory: Path, arch: str) -> List[Path]:
    """A run's checkpoints in ``directory`` (not best.ckpt, not partial writes), least
    progress first."""
    name = re.compile(re.escape(arch) + _RUN_CHECKPOINT.pattern)
    found = [p for p in Path(directory).glob(arch + "-e*.ckpt") if name.fullmatch(p.name)]
    return sorted(found, key=run_checkpoint_progress)


LATEST = "latest"


def resume_checkpoint(resume: str, directory: Path, arch: str) -> Path:
    """The checkpoint ``--resume`` names: a path, or ``latest``: the newest run checkpoint
    written in ``directory``. The newest written, not the furthest: after a resume from an
    earlier point, later checkpoints of the abandoned run may still be there. Among those
    written within one timestamp tick (coarse on some filesystems), the furthest."""
    if resume != LATEST:
        return Path(resume)
    found = run_checkpoints(Path(directory), arch)
    if not found:
        raise CheckpointError("--resume latest: no checkpoint in %s" % directory)
    return max(found, key=lambda p: (p.stat().st_mtime_ns, run_checkpoint_progress(p)))
