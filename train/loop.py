"""``python -m train``: train an IBN-Net on an ImageFolder dataset with MindSpore ``Model.train``.

One process per device; under ``msrun`` (see ``train.distributed``) every process is a
data-parallel rank (gradients averaged over ranks, data sharded by rank).

Each epoch's data pipeline is built from its own seed (``train.data``), so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have seen; the
optimizer's ``global_step`` (in the checkpoint) indexes the per-step lr schedule, so the
schedule continues where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ibnedge.cpu_isa import apply_default_cpu_isa_cap
from ibnedge.errors import UserError, run_reporting

from . import config as settings
from . import data, faults, schedule
from .checkpoint import (
    ModelInfo,
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

# Optimizer entries a resumed run may rebuild instead of loading (AMP's loss scale state;
# the lr schedule when the number of epochs changed).
_REBUILDABLE = ("learning_rate", "scale_sense", "current_iterator_step", "last_overflow_iterator_step")


class TrainingError(UserError, RuntimeError):
    """A problem with the run's inputs, reported without a traceback by the CLI."""


@dataclass
class Cluster:
    device: str
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def msrun_role() -> Optional[str]:
    """msrun (MindSpore's dynamic-cluster launcher) runs this program as MS_SCHED once and MS_WORKER per rank."""
    role = os.environ.get("MS_ROLE")
    return role if role in ("MS_SCHED", "MS_WORKER") else None


def setup_context(device: Optional[str], mode: str) -> Cluster:
    """MindSpore context; joins the process group when started by msrun."""
    import mindspore as ms

    if device:
        try:
            ms.set_device(device)
        except (RuntimeError, ValueError) as exc:  # this MindSpore build lacks the device's plugin
            raise TrainingError("this MindSpore cannot use --device %s (%s)" % (device, str(exc).strip().splitlines()[0]))
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    device = ms.get_context("device_target")
    if device == "CPU":  # known only now when MindSpore chose; still before its first CPU kernel
        apply_default_cpu_isa_cap()
    role = msrun_role()
    if role is None:
        return Cluster(device)
    if mode != "graph":
        raise TrainingError("distributed training needs --mode graph")
    from mindspore.communication import get_group_size, get_rank, init

    init()
    if role == "MS_SCHED":
        # The scheduler only coordinates the ranks; init() returns when they are done.
        raise SystemExit(0)
    world, rank = get_group_size(), get_rank()
    _check_rank(rank)
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=world
    )
    return Cluster(device, rank, world)


def _check_rank(rank: int) -> None:
    """train.distributed names logs and failures by the rank it asked msrun for (MS_NODE_ID,
    from --node-rank); a rank table may assign others, otherwise they must agree."""
    asked = os.environ.get("MS_NODE_ID", "")
    if asked.isdigit() and not os.environ.get("RANK_TABLE_FILE") and int(asked) != rank:
        raise TrainingError("this process was started as rank %s but joined the cluster as rank %d; "
                            "give every node its own --node-rank" % (asked, rank))


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


def resolve_amp(level: str, device: str) -> str:
    if level == "auto":
        return "O0" if device == "CPU" else "O2"
    if device == "CPU" and level != "O0":
        raise TrainingError(
            "--amp-level %s needs a GPU or Ascend device: mixed precision (float16) training is not "
            "supported by MindSpore's CPU backend; use --amp-level O0 (the default on CPU)" % level
        )
    return level


BEST_CHECKPOINT = "best.ckpt"


@dataclass
class RunState:
    steps_per_epoch: int
    images_per_step: int
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    global_step: int = 0
    stopped: bool = False
    losses: List[float] = field(default_factory=list)
    step_seconds: List[float] = field(default_factory=list)
    history: List[Dict] = field(default_factory=list)
    best: Optional[Dict] = None
    checkpoints: List[str] = field(default_factory=list)


def _loss_value(outputs) -> float:
    if isinstance(outputs, (tuple, list)):  # (loss, overflow, scale) under a loss-scale manager
        outputs = outputs[0]
    return float(np.asarray(outputs.asnumpy()).reshape(-1)[0])


def _callbacks(state: RunState, cfg, cluster: Cluster, model, lrs: np.ndarray, info: ModelInfo, val_set, say):
    import mindspore as ms

    class ProgressMonitor(ms.Callback):
        """Loss, lr and img/s (all ranks' images over wall time between step ends)."""

        def on_train_epoch_begin(self, run_context):
            self.last = time.perf_counter()
            self.window_start, self.window_images = self.last, 0
            self.epoch_start, self.epoch_losses = self.last, []

        def on_train_step_end(self, run_context):
            now = time.perf_counter()
            cb = run_context.original_args()
            loss = _loss_value(cb.net_outputs)
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
                say(
                    "epoch %d step %d/%d  loss %.4f  lr %.6f  %.1f img/s"
                    % (state.epoch + 1, state.step_in_epoch, state.steps_per_epoch, loss, lr, rate)
                )
                self.window_start, self.window_images = now, 0
            faults.after_step(cluster.rank, state.global_step)
            if cfg.max_steps and state.global_step >= cfg.max_steps:
                state.stopped = True
                run_context.request_stop()

        def on_train_epoch_end(self, run_context):
            seconds = time.perf_counter() - self.epoch_start
            if self.epoch_losses:
                say(
                    "epoch %d: mean loss %.4f, %d steps in %.1f s"
                    % (state.epoch + 1, float(np.mean(self.epoch_losses)), len(self.epoch_losses), seconds)
                )

    class CheckpointEval(ms.Callback):
        """Checkpoints (latest N kept), evaluation every K epochs, best checkpoint kept (rank 0)."""

        def on_train_step_end(self, run_context):
            if (
                cfg.save_every_steps
                and state.global_step % cfg.save_every_steps == 0
                and state.step_in_epoch < state.steps_per_epoch
            ):
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
                self.evaluate(path)

        def save(self) -> Optional[Path]:
            if not cluster.is_main:
                return None
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

        def evaluate(self, path: Optional[Path]) -> None:
            if not cluster.is_main:
                return
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
            if path is not None and (state.best is None or record["top1"] > state.best["top1"]):
                best = Path(cfg.output_dir) / BEST_CHECKPOINT
                shutil.copyfile(str(path), str(best))
                state.best = dict(record, checkpoint=str(best), source=path.name)
                # Its score, so that a resumed run replaces it only with a better one.
                _write_json_atomic(best.with_suffix(".json"), state.best)

    return [ProgressMonitor(), CheckpointEval()]


def _resume(model, ckpt, state: RunState, say) -> None:
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


def _write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _restore_run_records(state: RunState, output_dir: Path, arch: str, say) -> None:
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


def _dump_path(path: str, cluster: Cluster) -> Path:
    p = Path(path)
    if cluster.world > 1:
        p = p.with_name("%s.rank%d%s" % (p.stem, cluster.rank, p.suffix or ".npz"))
    return p


def run(cfg) -> Dict:
    """Train as ``cfg`` (the resolved settings of ``train.config``) says; returns the summary."""
    import mindspore as ms
    from mindspore import nn

    from .models import create_model

    started = time.time()
    cluster = setup_context(cfg.device, cfg.mode)
    prefix = "[rank %d] " % cluster.rank if cluster.world > 1 else ""

    def say(message: str) -> None:
        print(prefix + message, flush=True)

    if not cfg.train_dir:
        raise TrainingError("--train-dir is required (an ImageFolder root: one subfolder per class)")
    amp_level = resolve_amp(cfg.amp_level, cluster.device)
    train_set = data.scan_image_folder(cfg.train_dir, check=cfg.check_images, workers=cfg.workers, report=say)
    say(data.describe(train_set))
    val_folder = None
    if cfg.val_dir:
        val_folder = data.scan_image_folder(cfg.val_dir, classes=train_set.classes, check=cfg.check_images,
                                            workers=cfg.workers, report=say)
        say(data.describe(val_folder))
    classes = train_set.classes
    num_classes = cfg.num_classes or len(classes)
    if num_classes != len(classes):
        raise TrainingError(
            "--num-classes %d but %s has %d class folders" % (num_classes, cfg.train_dir, len(classes))
        )

    per_shard = data.shard_size(len(train_set), cluster.world)
    steps_per_epoch = per_shard // cfg.batch_size
    if steps_per_epoch < 1:
        raise TrainingError(
            "%d images per process is less than one batch of %d; lower --batch-size" % (per_shard, cfg.batch_size)
        )
    global_batch = cfg.batch_size * cluster.world
    peak_lr = cfg.lr or schedule.scaled_lr(global_batch, cfg.base_lr, cfg.lr_base_batch)
    lrs = schedule.learning_rates(
        peak_lr, cfg.epochs, steps_per_epoch, cfg.lr_schedule, cfg.milestones, cfg.lr_gamma,
        cfg.warmup_epochs, cfg.min_lr,
    )

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

    params = net.trainable_params()
    if not params:
        raise TrainingError("--freeze leaves nothing to train")
    if cfg.no_wd_norm_bias:
        # Norm scales/shifts and biases are the 1-D parameters in every family here.
        decay = [p for p in params if len(p.shape) > 1]
        no_decay = [p for p in params if len(p.shape) <= 1]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"order_params": params},
        ]
        optimizer = nn.Momentum(groups, learning_rate=ms.Tensor(lrs), momentum=cfg.momentum)
    else:
        optimizer = nn.Momentum(params, learning_rate=ms.Tensor(lrs), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model_kwargs = {}
    if amp_level != "O0":
        model_kwargs["loss_scale_manager"] = ms.DynamicLossScaleManager(cfg.loss_scale, 2, 2000)
    from .eval import metrics

    train_net, model_amp_level = mixed_precision(net, amp_level)
    model = ms.Model(train_net, loss_fn, optimizer, metrics=metrics(), amp_level=model_amp_level, **model_kwargs)

    info = ModelInfo(arch=cfg.arch, num_classes=num_classes, class_names=list(classes),
                     image_size=cfg.image_size, resize=cfg.resize, semantics="mindspore", source=source)
    state = RunState(steps_per_epoch=steps_per_epoch, images_per_step=global_batch)
    if cfg.resume:
        resume_path = resume_checkpoint(cfg.resume, Path(cfg.output_dir), cfg.arch)
        ckpt = read_checkpoint(resume_path)
        if ckpt.info is not None and (ckpt.info.arch, ckpt.info.class_names) != (cfg.arch, list(classes)):
            raise TrainingError(
                "%s was trained as %s on classes %s; this run is %s on %s"
                % (resume_path, ckpt.info.arch, ckpt.info.class_names, cfg.arch, list(classes))
            )
        _resume(model, ckpt, state, say)
        if cluster.is_main:  # the rank that saves and evaluates
            _restore_run_records(state, Path(cfg.output_dir), cfg.arch, say)
    if cfg.max_steps and state.global_step >= cfg.max_steps:
        raise TrainingError("--max-steps %d: the run is already at step %d" % (cfg.max_steps, state.global_step))

    val_set = None
    if val_folder is not None and cluster.is_main:
        val_set = data.eval_dataset(val_folder, cfg.batch_size, cfg.image_size, cfg.resize, cfg.workers)
    callbacks = _callbacks(state, cfg, cluster, model, lrs, info, val_set, say)
    say(
        "%s, %d classes, %s on %s, %d process(es), %d steps/epoch of %d images, lr %.5f (%s), amp %s"
        % (cfg.arch, num_classes, cfg.mode, cluster.device, cluster.world, steps_per_epoch, global_batch,
           peak_lr, cfg.lr_schedule, amp_level)
    )
    if cluster.is_main:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)

    first_epoch = state.epoch  # the shard this rank reads first, reported by --dump-weights
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
            raise TrainingError("epoch %d ended after %d of %d steps" % (epoch + 1, state.step_in_epoch, steps_per_epoch))

    if cfg.dump_weights:
        dump = _dump_path(cfg.dump_weights, cluster)
        dump.parent.mkdir(parents=True, exist_ok=True)
        shard_files = [str(train_set.files[i]) for i in data.shard_indices(
            len(train_set), cfg.seed, first_epoch, cluster.world, cluster.rank, cfg.shuffle)]
        np.savez(str(dump), __shard_files__=np.asarray(shard_files), **trainable_arrays(net))
        say("trainable parameters written to %s" % dump)

    steady = state.step_seconds[1:] or state.step_seconds
    summary = {
        "arch": cfg.arch,
        "num_classes": num_classes,
        "classes": list(classes),
        "device": cluster.device,
        "world_size": cluster.world,
        "rank": cluster.rank,
        "start_epoch": first_epoch,
        "epochs_completed": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "steps_per_epoch": steps_per_epoch,
        "global_batch": global_batch,
        "peak_lr": peak_lr,
        "first_loss": state.losses[0] if state.losses else None,
        "last_loss": state.losses[-1] if state.losses else None,
        "losses": [round(v, 6) for v in state.losses],
        "img_per_s": round(global_batch / float(np.median(steady)), 3) if steady else None,
        "evals": state.history,
        "best": state.best,
        "checkpoints": state.checkpoints,
        "skipped_images": [str(b) for b in train_set.bad],
        "elapsed_s": round(time.time() - started, 2),
    }
    if cluster.is_main:
        out = Path(cfg.summary_json) if cfg.summary_json else Path(cfg.output_dir) / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    cfg = settings.resolve(settings.train_parser(), argv)

    def train() -> int:
        run(cfg)
        return 0

    # Bad --arch/--freeze/paths: one line, no traceback; a bug keeps its traceback.
    return run_reporting(train, "error: ", cfg.debug)
