"""``python -m train``: train an IBN-Net on an ImageFolder dataset with MindSpore ``Model.train``.

One process per device; under ``msrun`` (see ``train.distributed``) every process is a
data-parallel rank (gradients averaged over ranks, data sharded by rank).

:func:`run` is a sequence of stages, one function each, in the order of the module: the
settings checkable without the images (device, AMP, the lr schedule, classes, ``--resume``,
the model with its ``--pretrained`` weights and ``--freeze``; each value on its own is checked
as it is parsed, in ``train.config``), then the data, the lr schedule, the
optimizer and ``Model``, the resume state, the callbacks (progress; checkpoints,
evaluation and best.ckpt), the epochs, and the summary. The resolved settings are saved as
``config.yaml`` beside the checkpoints (``python -m train --config`` repeats the run).

Each epoch's data pipeline is built from its own seed (``train.data``), so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have seen; the
optimizer's ``global_step`` (in the checkpoint) indexes the per-step lr schedule, so the
schedule continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ibnedge.errors import run_reporting
from ibnedge.metadata import ModelMetadata

from . import config as settings
from . import data, faults, schedule
from .atomic_files import copy_atomic, write_text_atomic
from .checkpoint import (
    freeze,
    freeze_batch_norm,
    load_into,
    read_checkpoint,
    resume_checkpoint,
    run_checkpoint_name,
    run_checkpoint_progress,
    run_checkpoints,
    save_run_checkpoint,
    trainable_arrays,
)
from .context import Cluster, TrainingError, setup_context

Say = Callable[[str], None]

# Optimizer entries a resumed run may rebuild instead of loading (AMP's loss scale state;
# the lr schedule when the number of epochs changed).
_REBUILDABLE = ("learning_rate", "scale_sense", "current_iterator_step", "last_overflow_iterator_step")
BEST_CHECKPOINT = "best.ckpt"


def run(cfg: argparse.Namespace) -> Dict:
    """Train as ``cfg`` (the resolved settings of ``train.config``) says; returns the summary.

    Everything that can be refused without reading an image comes before the dataset scan,
    which takes minutes on a large set: a typo in --arch must not wait for it.
    """
    started = time.time()
    cluster = setup_context(cfg.device, cfg.mode)
    say = _reporter(cluster)
    amp_level = resolve_amp(cfg.amp_level, cluster.device)
    check_schedule(cfg, cluster.world)
    classes = class_names(cfg)
    resume_from = resume_point(cfg, classes)
    net, source = create_network(cfg, len(classes), say)
    info = run_model_info(cfg, classes, source)

    datasets = load_data(cfg, classes, cluster, say)
    lrs = learning_rates(cfg, datasets.steps_per_epoch, cluster.world)
    model = build_model(net, cfg, lrs, amp_level)
    state = start_state(model, resume_from, datasets.steps_per_epoch, lrs, cfg, cluster, say)
    callbacks = make_callbacks(model, datasets, lrs, info, state, cfg, cluster, say)
    say("%s, %d classes, %s on %s, %d process(es), %d steps/epoch of %d images, lr %.5f (%s), amp %s"
        % (cfg.arch, len(classes), cfg.mode, cluster.device, cluster.world, datasets.steps_per_epoch,
           lrs.global_batch, lrs.peak, cfg.lr_schedule, amp_level))
    if cluster.is_main:  # one writer: every rank holds the same settings
        say("settings saved to %s" % save_run_config(cfg))

    train_epochs(model, datasets.train, callbacks, state, cfg, cluster)
    if cfg.dump_weights:
        dump_weights(net, datasets.train, state, cfg, cluster, say)
    summary = summarise(cfg, cluster, classes, datasets, lrs, state, time.time() - started)
    write_summary(summary, cfg, cluster)
    return summary


def _reporter(cluster: Cluster) -> Say:
    """``say(message)``: a line on stdout, tagged with the rank when there are several."""
    prefix = "[rank %d] " % cluster.rank if cluster.world > 1 else ""

    def say(message: str) -> None:
        print(prefix + message, flush=True)

    return say


# ----------------------------------------------------------------------------- before the data


def resolve_amp(level: str, device: str) -> str:
    if level == "auto":
        return "O0" if device == "CPU" else "O2"
    if device == "CPU" and level != "O0":
        raise TrainingError(
            "--amp-level %s needs a GPU or Ascend device: mixed precision (float16) training is not "
            "supported by MindSpore's CPU backend; use --amp-level O0 (the default on CPU)" % level
        )
    return level


def check_schedule(cfg: argparse.Namespace, world: int) -> None:
    """The lr schedule's settings that contradict each other (--warmup-epochs beyond --epochs,
    a cosine --min-lr above the peak): only its length per epoch needs the data."""
    schedule.check_schedule(peak_lr(cfg, world), cfg.epochs, cfg.lr_schedule, cfg.warmup_epochs, cfg.min_lr)


def class_names(cfg: argparse.Namespace) -> List[str]:
    """The class folders of --train-dir (and that --val-dir's are among them): their names
    only, no image is read yet."""
    if not cfg.train_dir:
        raise TrainingError("--train-dir is required (an ImageFolder root: one subfolder per class)")
    classes = data.list_classes(Path(cfg.train_dir))
    if cfg.num_classes and cfg.num_classes != len(classes):
        raise TrainingError(
            "--num-classes %d but %s has %d class folders" % (cfg.num_classes, cfg.train_dir, len(classes))
        )
    if cfg.val_dir:
        data.check_class_folders(Path(cfg.val_dir), classes)
    return classes


def resume_point(cfg: argparse.Namespace, classes: List[str]):
    """The ``Checkpoint`` that --resume names (None without it), refused at once if it holds
    another architecture or other classes; it is loaded once the optimizer exists."""
    if not cfg.resume:
        return None
    path = resume_checkpoint(cfg.resume, Path(cfg.output_dir), cfg.arch)
    ckpt = read_checkpoint(path)
    if ckpt.info is not None and (ckpt.info.arch, ckpt.info.class_names) != (cfg.arch, list(classes)):
        raise TrainingError(
            "%s was trained as %s on classes %s; this run is %s on %s"
            % (path, ckpt.info.arch, ckpt.info.class_names, cfg.arch, list(classes))
        )
    return ckpt


def create_network(cfg: argparse.Namespace, num_classes: int, say: Say) -> Tuple[object, str]:
    """``(network, where its weights come from)``: --arch seeded, --pretrained loaded, --freeze applied."""
    import mindspore as ms

    from .models import create_model

    ms.set_seed(cfg.seed)
    net = create_model(cfg.arch, num_classes=num_classes)
    source = "random-init"
    if cfg.pretrained:
        pre = read_checkpoint(Path(cfg.pretrained), arch=cfg.arch)  # refuses another architecture
        loaded = load_into(net, pre.params, cfg.pretrained, allow_new_head=True, report=say)
        say("pretrained: %d parameters from %s" % (len(loaded), cfg.pretrained))
        source = Path(cfg.pretrained).name
    if cfg.freeze:
        frozen = freeze(net, cfg.freeze)
        say("frozen: %d parameters (%s)" % (len(frozen), ", ".join(cfg.freeze)))
    if cfg.freeze_bn:
        say("BatchNorm frozen in %d layers (running statistics used and kept)" % freeze_batch_norm(net))
    if not net.trainable_params():
        raise TrainingError("--freeze leaves nothing to train")
    return net, source


def run_model_info(cfg: argparse.Namespace, classes: List[str], source: str) -> ModelMetadata:
    """What this run's checkpoints say they hold (``train.checkpoint`` stores it in each):
    weights trained here, hence ``mindspore`` semantics (ibnedge.metadata.ORIGIN_SEMANTICS)."""
    return ModelMetadata.describe(cfg.arch, len(classes), origin="trained", source=source, crop=cfg.image_size,
                                  resize=cfg.resize, class_names=list(classes))


# ----------------------------------------------------------------------------- data and schedule


@dataclass
class Datasets:
    train: data.ImageFolder
    val: Optional[data.ImageFolder]
    steps_per_epoch: int  # of every rank: MindSpore pads the shards to the same size


def load_data(cfg: argparse.Namespace, classes: List[str], cluster: Cluster, say: Say) -> Datasets:
    """The checked training and validation sets (bad files reported and left out)."""
    scan = dict(classes=classes, check=cfg.check_images, workers=cfg.workers, report=say)
    train_set = data.scan_image_folder(Path(cfg.train_dir), **scan)
    say(data.describe(train_set))
    val_set = None
    if cfg.val_dir:
        val_set = data.scan_image_folder(Path(cfg.val_dir), **scan)
        say(data.describe(val_set))
    per_shard = data.shard_size(len(train_set), cluster.world)
    steps_per_epoch = per_shard // cfg.batch_size
    if steps_per_epoch < 1:
        raise TrainingError(
            "%d images per process is less than one batch of %d; lower --batch-size" % (per_shard, cfg.batch_size)
        )
    return Datasets(train_set, val_set, steps_per_epoch)


@dataclass
class LearningRates:
    global_batch: int  # images per step, all ranks together
    peak: float
    per_step: np.ndarray  # indexed by the optimizer's global_step


def peak_lr(cfg: argparse.Namespace, world: int) -> float:
    """--lr, or --base-lr scaled to the global batch of ``world`` processes."""
    return cfg.lr or schedule.scaled_lr(cfg.batch_size * world, cfg.base_lr, cfg.lr_base_batch)


def learning_rates(cfg: argparse.Namespace, steps_per_epoch: int, world: int) -> LearningRates:
    global_batch = cfg.batch_size * world
    peak = peak_lr(cfg, world)
    per_step = schedule.learning_rates(peak, cfg.epochs, steps_per_epoch, cfg.lr_schedule, cfg.milestones,
                                       cfg.lr_gamma, cfg.warmup_epochs, cfg.min_lr)
    return LearningRates(global_batch, peak, per_step)


# ----------------------------------------------------------------------------- model and optimizer


def build_model(net, cfg: argparse.Namespace, lrs: LearningRates, amp_level: str):
    """``ms.Model``: loss, SGD with momentum over the per-step schedule, AMP, top-1/top-5 metrics."""
    import mindspore as ms
    from mindspore import nn

    from .eval import metrics

    optimizer = _optimizer(net.trainable_params(), cfg, ms.Tensor(lrs.per_step))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model_kwargs = {}
    if amp_level != "O0":
        model_kwargs["loss_scale_manager"] = ms.DynamicLossScaleManager(cfg.loss_scale, 2, 2000)
    train_net, model_amp_level = mixed_precision(net, amp_level)
    return ms.Model(train_net, loss_fn, optimizer, metrics=metrics(), amp_level=model_amp_level, **model_kwargs)


def _optimizer(params: list, cfg: argparse.Namespace, learning_rate):
    from mindspore import nn

    if not cfg.no_wd_norm_bias:
        return nn.Momentum(params, learning_rate=learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Norm scales/shifts and biases are the 1-D parameters in every family here.
    groups = [
        {"params": [p for p in params if len(p.shape) > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if len(p.shape) <= 1], "weight_decay": 0.0},
        {"order_params": params},
    ]
    return nn.Momentum(groups, learning_rate=learning_rate, momentum=cfg.momentum)


def mixed_precision(net, level: str):
    """``(network, amp_level)`` for ``ms.Model`` training at AMP ``level``.

    O2 and O3 are MindSpore's (float16 cells; O2 keeps BatchNorm and LayerNorm in float32)
    with IBN's InstanceNorm2d kept in float32 at both levels, as PyTorch's autocast does:
    MindSpore's lists know only its own norms, and instance statistics in float16 overflow
    (the squared deviations of activations in the hundreds exceed 65504). The network is
    converted here, so Model gets amp_level O0 (converting twice is not supported).
    """
    if level not in ("O2", "O3"):
        return net, level
    from mindspore import amp

    from .models import InstanceNorm2d

    kept_float32 = (amp.get_black_list() if level == "O2" else []) + [InstanceNorm2d]
    return amp.custom_mixed_precision(net, black_list=kept_float32), "O0"


# ----------------------------------------------------------------------------- resume state


@dataclass
class RunState:
    steps_per_epoch: int
    images_per_step: int
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    global_step: int = 0
    start_epoch: int = 0  # where this process began: the shard it read first (--dump-weights)
    stopped: bool = False
    losses: List[float] = field(default_factory=list)
    step_seconds: List[float] = field(default_factory=list)
    history: List[Dict] = field(default_factory=list)
    best: Optional[Dict] = None
    checkpoints: List[str] = field(default_factory=list)


def start_state(model, resume_from, steps_per_epoch: int, lrs: LearningRates, cfg: argparse.Namespace,
                cluster: Cluster, say: Say) -> RunState:
    """The run's progress at its first step: zero, or the checkpoint's (``resume_point``)
    loaded into ``model`` with the interrupted run's bookkeeping."""
    state = RunState(steps_per_epoch=steps_per_epoch, images_per_step=lrs.global_batch)
    if resume_from is not None:
        _resume(model, resume_from, state, say)
        if cluster.is_main:  # the rank that saves and evaluates
            _restore_run_records(state, Path(cfg.output_dir), cfg.arch, say)
    if cfg.max_steps and state.global_step >= cfg.max_steps:
        raise TrainingError("--max-steps %d: the run is already at step %d" % (cfg.max_steps, state.global_step))
    state.start_epoch = state.epoch
    return state


def _resume(model, ckpt, state: RunState, say: Say) -> None:
    """Load network and optimizer state; set the run's progress from the checkpoint."""
    import mindspore as ms

    missing, rebuilt = [], []
    for p in model.train_network.get_parameters():
        value = ckpt.params.get(p.name)
        if value is None or tuple(value.shape) != tuple(p.shape):
            (rebuilt if p.name.split(".")[-1] in _REBUILDABLE else missing).append(p.name)
            continue
        p.set_data(ms.Tensor(value.astype(ms.dtype_to_nptype(p.dtype), copy=False)))
    if missing:
        raise TrainingError(
            "%s does not match this run (%d parameters missing or reshaped: %s); resume with the "
            "settings of the run that wrote it" % (ckpt.path, len(missing), ", ".join(missing[:6]))
        )
    if rebuilt:
        say("resume: rebuilt %s from this run's settings" % ", ".join(rebuilt))
    state.epoch, state.step_in_epoch = ckpt.epoch, ckpt.step_in_epoch
    state.global_step = ckpt.epoch * state.steps_per_epoch + ckpt.step_in_epoch
    stored = ckpt.params.get("global_step")
    if stored is not None and int(stored.reshape(-1)[0]) != state.global_step:
        raise TrainingError(
            "%s: optimizer step %d does not match epoch %d + step %d at %d steps per epoch; "
            "resume with the same data, --batch-size and number of processes"
            % (ckpt.path, int(stored.reshape(-1)[0]), ckpt.epoch, ckpt.step_in_epoch, state.steps_per_epoch)
        )
    say("resumed from %s at epoch %d, step %d" % (ckpt.path, state.epoch, state.step_in_epoch))


def _restore_run_records(state: RunState, output_dir: Path, arch: str, say: Say) -> None:
    """A resumed run continues the interrupted run's bookkeeping in ``output_dir``: its
    checkpoints up to the resume point count towards --keep-checkpoints (later ones, from
    a run being redone, are left alone until this run overwrites them), and best.ckpt is
    replaced only by a better evaluation than the one recorded in best.json."""
    resumed_at = (state.epoch, state.step_in_epoch)
    state.checkpoints = [str(p) for p in run_checkpoints(output_dir, arch) if run_checkpoint_progress(p) <= resumed_at]
    record = output_dir / BEST_CHECKPOINT
    scores = record.with_suffix(".json")
    if scores.is_file():
        try:
            state.best = json.loads(scores.read_text(encoding="utf-8"))
            float(state.best["top1"])
        except (ValueError, KeyError, TypeError):
            say("warning: %s is unreadable; the next evaluation replaces %s" % (scores, record.name))
            state.best = None
    elif record.is_file():
        say("warning: %s has no score beside it (%s); the next evaluation replaces it" % (record, scores.name))


# ----------------------------------------------------------------------------- callbacks


def make_callbacks(model, datasets: Datasets, lrs: LearningRates, info: ModelMetadata, state: RunState,
                   cfg: argparse.Namespace, cluster: Cluster, say: Say) -> list:
    val_set = None
    if datasets.val is not None and cluster.is_main:  # rank 0 evaluates
        val_set = data.eval_dataset(datasets.val, cfg.batch_size, cfg.image_size, cfg.resize, cfg.workers)
    return [_progress_monitor(state, lrs.per_step, cfg, cluster, say),
            _checkpoint_eval(model, val_set, info, state, cfg, cluster, say)]


def _loss_value(outputs) -> float:
    if isinstance(outputs, (tuple, list)):  # (loss, overflow, scale) under a loss-scale manager
        outputs = outputs[0]
    return float(np.asarray(outputs.asnumpy()).reshape(-1)[0])


def _progress_monitor(state: RunState, lrs: np.ndarray, cfg: argparse.Namespace, cluster: Cluster, say: Say):
    import mindspore as ms

    class ProgressMonitor(ms.Callback):
        """Loss, lr and img/s (all ranks' images over wall time between step ends); --max-steps."""

        def on_train_epoch_begin(self, run_context):
            self.last = time.perf_counter()
            self.window_start, self.window_images = self.last, 0
            self.epoch_start, self.epoch_losses = self.last, []

        def on_train_step_end(self, run_context):
            now = time.perf_counter()
            loss = _loss_value(run_context.original_args().net_outputs)
            state.step_seconds.append(now - self.last)
            self.last = now
            state.losses.append(loss)
            self.epoch_losses.append(loss)
            lr = float(lrs[min(state.global_step, len(lrs) - 1)])
            state.global_step += 1
            state.step_in_epoch += 1
            self.window_images += state.images_per_step
            if state.step_in_epoch % cfg.log_every == 0 or state.step_in_epoch == state.steps_per_epoch:
                rate = self.window_images / max(now - self.window_start, 1e-9)
                say("epoch %d step %d/%d  loss %.4f  lr %.6f  %.1f img/s"
                    % (state.epoch + 1, state.step_in_epoch, state.steps_per_epoch, loss, lr, rate))
                self.window_start, self.window_images = now, 0
            faults.after_step(cluster.rank, state.global_step)
            if cfg.max_steps and state.global_step >= cfg.max_steps:
                state.stopped = True
                run_context.request_stop()

        def on_train_epoch_end(self, run_context):
            seconds = time.perf_counter() - self.epoch_start
            if self.epoch_losses:
                say("epoch %d: mean loss %.4f, %d steps in %.1f s"
                    % (state.epoch + 1, float(np.mean(self.epoch_losses)), len(self.epoch_losses), seconds))

    return ProgressMonitor()


def _checkpoint_eval(model, val_set, info: ModelMetadata, state: RunState, cfg: argparse.Namespace, cluster: Cluster,
                     say: Say):
    import mindspore as ms

    class CheckpointEval(ms.Callback):
        """Checkpoints (every --save-every-steps and at epoch ends), evaluation every
        --eval-every epochs and best.ckpt: on rank 0, which holds the same weights as every rank."""

        def on_train_step_end(self, run_context):
            if (cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0
                    and state.step_in_epoch < state.steps_per_epoch):
                self.save()

        def on_train_epoch_end(self, run_context):
            if state.step_in_epoch < state.steps_per_epoch:  # stopped inside the epoch
                self.save()
                return
            state.epoch += 1
            state.step_in_epoch = 0
            path = self.save()
            last = state.epoch == cfg.epochs or state.stopped
            if val_set is not None and cfg.eval_every and (state.epoch % cfg.eval_every == 0 or last):
                _evaluate(model, val_set, path, state, say)  # val_set: rank 0 only, which saved at path

        def save(self) -> Optional[Path]:
            return _save_checkpoint(model, info, state, cfg, say) if cluster.is_main else None

    return CheckpointEval()


def _save_checkpoint(model, info: ModelMetadata, state: RunState, cfg: argparse.Namespace, say: Say) -> Path:
    """The run checkpoint at the current step; the oldest beyond --keep-checkpoints deleted."""
    name = run_checkpoint_name(cfg.arch, state.epoch, state.step_in_epoch)
    path = save_run_checkpoint(model.train_network, Path(cfg.output_dir) / name, info, state.epoch,
                               state.step_in_epoch)
    if str(path) in state.checkpoints:  # rewritten after a resume from an earlier point
        state.checkpoints.remove(str(path))
    state.checkpoints.append(str(path))
    while len(state.checkpoints) > cfg.keep_checkpoints:
        old = Path(state.checkpoints.pop(0))
        if old.exists():
            old.unlink()
    say("saved %s" % path)
    return path


def _evaluate(model, val_set, path: Path, state: RunState, say: Say) -> None:
    """Top-1/top-5 of the checkpoint just saved at ``path``; it becomes best.ckpt if it beats the best so far."""
    start = time.perf_counter()
    result = model.eval(val_set, dataset_sink_mode=False)
    record = {
        "epoch": state.epoch,
        "top1": float(result["top_1_accuracy"]),
        "top5": float(result["top_5_accuracy"]),
        "seconds": round(time.perf_counter() - start, 3),
    }
    state.history.append(record)
    say("eval epoch %d: top-1 %.4f  top-5 %.4f" % (state.epoch, record["top1"], record["top5"]))
    if state.best is None or record["top1"] > state.best["top1"]:
        best = path.parent / BEST_CHECKPOINT
        # Replaced, not overwritten: an export reading the old best.ckpt keeps reading it,
        # and a kill during the copy leaves the old file whole.
        copy_atomic(path, best)
        state.best = dict(record, checkpoint=str(best), source=path.name)
        # Its score, so that a resumed run replaces it only with a better one.
        write_text_atomic(best.with_suffix(".json"), json.dumps(state.best, indent=2) + "\n")


# ----------------------------------------------------------------------------- the epochs


def train_epochs(model, train_set: data.ImageFolder, callbacks: list, state: RunState, cfg: argparse.Namespace,
                 cluster: Cluster) -> None:
    """``Model.train`` epoch by epoch from ``state`` until --epochs or --max-steps."""
    while state.epoch < cfg.epochs and not state.stopped:
        epoch = state.epoch
        batches = data.train_dataset(
            train_set, cfg.batch_size, cfg.image_size, cfg.resize, cfg.seed, epoch, cluster.world, cluster.rank,
            cfg.workers, augment=cfg.augment, shuffle=cfg.shuffle,
        )
        if state.step_in_epoch:
            # Same seed, same pipeline: skipping the batches already trained on reproduces
            # the rest of the epoch (augmentations included).
            batches = batches.skip(state.step_in_epoch)
        model.train(epoch + 1, batches, callbacks=callbacks, dataset_sink_mode=False, initial_epoch=epoch)
        if state.epoch == epoch and not state.stopped:
            raise TrainingError("epoch %d ended after %d of %d steps" % (epoch + 1, state.step_in_epoch,
                                                                        state.steps_per_epoch))


# ----------------------------------------------------------------------------- what the run leaves


def save_run_config(cfg: argparse.Namespace) -> Path:
    """The resolved settings as ``config.yaml`` beside the checkpoints (rank 0): the same
    run again is ``python -m train --config`` that file."""
    saved = settings.saved_settings(cfg, settings.train_parser())
    path = Path(saved["output_dir"]) / settings.RUN_CONFIG  # absolute, as the paths in it
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = ("The resolved settings of the run in this folder (defaults < config file < flags).\n"
               "python -m train --config %s repeats it; flags given with --config override these." % path)
    write_text_atomic(path, settings.config_text(saved, comment))
    return path


def _dump_path(path: str, cluster: Cluster) -> Path:
    p = Path(path)
    if cluster.world > 1:
        p = p.with_name("%s.rank%d%s" % (p.stem, cluster.rank, p.suffix or ".npz"))
    return p


def dump_weights(net, train_set: data.ImageFolder, state: RunState, cfg: argparse.Namespace, cluster: Cluster,
                 say: Say) -> None:
    """--dump-weights: the trainable parameters and the files of the shard this rank read first."""
    dump = _dump_path(cfg.dump_weights, cluster)
    dump.parent.mkdir(parents=True, exist_ok=True)
    shard_files = [str(train_set.files[i]) for i in data.shard_indices(
        len(train_set), cfg.seed, state.start_epoch, cluster.world, cluster.rank, cfg.shuffle)]
    np.savez(str(dump), __shard_files__=np.asarray(shard_files), **trainable_arrays(net))
    say("trainable parameters written to %s" % dump)


def summarise(cfg: argparse.Namespace, cluster: Cluster, classes: List[str], datasets: Datasets,
              lrs: LearningRates, state: RunState, seconds: float) -> Dict:
    steady = state.step_seconds[1:] or state.step_seconds  # the first step compiles the graph
    return {
        "arch": cfg.arch,
        "num_classes": len(classes),
        "classes": list(classes),
        "device": cluster.device,
        "world_size": cluster.world,
        "rank": cluster.rank,
        "start_epoch": state.start_epoch,
        "epochs_completed": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "steps_per_epoch": datasets.steps_per_epoch,
        "global_batch": lrs.global_batch,
        "peak_lr": lrs.peak,
        "first_loss": state.losses[0] if state.losses else None,
        "last_loss": state.losses[-1] if state.losses else None,
        "losses": [round(v, 6) for v in state.losses],
        "img_per_s": round(lrs.global_batch / float(np.median(steady)), 3) if steady else None,
        "evals": state.history,
        "best": state.best,
        "checkpoints": state.checkpoints,
        "skipped_images": [str(b) for b in datasets.train.bad],
        "elapsed_s": round(seconds, 2),
    }


def write_summary(summary: Dict, cfg: argparse.Namespace, cluster: Cluster) -> None:
    """summary.json beside the checkpoints (or --summary-json) from rank 0; one JSON line on stdout from every rank."""
    if cluster.is_main:
        out = Path(cfg.summary_json) if cfg.summary_json else Path(cfg.output_dir) / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    cfg = settings.resolve(settings.train_parser(), argv)

    def train() -> int:
        run(cfg)
        return 0

    # Bad --arch/--freeze/paths: one line, no traceback; a bug keeps its traceback.
    return run_reporting(train, "error: ", cfg.debug)
