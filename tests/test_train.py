"""python -m train / train.eval end to end on a tiny ImageFolder of real photographs.

Small variant (resnet_ibn_a_tiny), 64 px crops, MindSpore graph mode (a few seconds of
compile per process). Every CLI runs in a fresh interpreter, as a user would run it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from train import config, data, schedule  # noqa: E402
from train.checkpoint import read_checkpoint  # noqa: E402
from train.loop import TrainingError, resolve_amp  # noqa: E402
from train_helpers import (CLASSES, CORRUPT_NAME, FileOpens, last_json, load_dumped_weights, make_image_folder,  # noqa: E402
                           max_weight_diff, run_module, save_reference_pth)

pytestmark = pytest.mark.needs_mindspore

TINY = ["--device", "CPU", "--arch", "resnet_ibn_a_tiny", "--image-size", "64", "--resize", "73",
        "--workers", "2", "--log-every", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("photos"), per_class=6, size=80)


# ----------------------------------------------------------------------------- settings


def test_config_file_then_flags_override(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 7\nbatch-size: 12\nmilestones: [2, 4]\nlr_schedule: cosine\n"
                                      "train_dir: data/train\nfreeze: stem,layer1\nno_wd_norm_bias: true\n")
    (tmp_path / "run.toml").write_text('epochs = 5\nlabel_smoothing = 0.1\nmilestones = "1,3"\n')
    cfg = config.resolve(config.train_parser(), ["--config", str(tmp_path / "run.yaml"), "--epochs", "9"])
    assert (cfg.epochs, cfg.batch_size, cfg.milestones, cfg.lr_schedule) == (9, 12, [2, 4], "cosine")
    assert cfg.train_dir == str(tmp_path / "data" / "train")  # relative to the config file
    assert cfg.freeze == ["stem", "layer1"] and cfg.no_wd_norm_bias is True
    assert cfg.momentum == 0.9 and cfg.weight_decay == 1e-4  # the seed's defaults stay
    assert {"epochs", "batch_size", "milestones"} <= cfg.explicit and "momentum" not in cfg.explicit
    cfg = config.resolve(config.train_parser(), ["--config", str(tmp_path / "run.toml")])
    assert (cfg.epochs, cfg.label_smoothing, cfg.milestones, cfg.batch_size) == (5, 0.1, [1, 3], 64)


def test_config_file_errors_name_the_file_and_setting(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(SystemExit):
        config.resolve(config.train_parser(), ["--config", str(bad)])
    err = capsys.readouterr().err
    assert str(bad) in err and "'epoch'" in err


def test_debug_is_not_saved_as_a_setting_of_the_run(tmp_path):
    """--debug says how one process reports an error, not what the run is: config.yaml leaves
    it out, so --config with that file repeats the run without turning tracebacks on."""
    parser = config.train_parser()
    saved = config.saved_settings(config.resolve(parser, ["--debug", "--epochs", "3"]), parser)
    assert "debug" not in saved and saved["epochs"] == 3
    path = tmp_path / config.RUN_CONFIG
    path.write_text(config.config_text(saved, "test"))
    assert "debug" not in config.load_config_file(path)
    assert config.resolve(parser, ["--config", str(path)]).debug is False


@pytest.mark.parametrize("flag, value, wording", [
    ("--warmup-epochs", "-1", "0 or more"), ("--min-lr", "-0.001", "0 or more"), ("--momentum", "-0.9", "0 or more"),
    ("--weight-decay", "-1e-4", "0 or more"), ("--label-smoothing", "1", "in [0, 1)"),
    ("--label-smoothing", "-0.1", "in [0, 1)"), ("--eval-every", "-1", "0 or more"),
    ("--save-every-steps", "-5", "0 or more"), ("--max-steps", "-1", "0 or more"),
])
def test_values_wrong_whatever_the_data_are_refused_as_they_are_parsed(flag, value, wording, capsys):
    """Before any image is read; MindSpore refused the first four only after the dataset scan,
    with a traceback, and the rest ran (a negative --max-steps stopped after one step)."""
    with pytest.raises(SystemExit) as exit_info:
        config.resolve(config.train_parser(), ["%s=%s" % (flag, value)])
    assert exit_info.value.code == 2
    assert "argument %s: must be %s, got %s" % (flag, wording, value) in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ("mode: grpah", "mode must be one of graph, pynative, got 'grpah'"),  # ran PyNative
    ("batch_size: 0", "batch_size: must be positive"),  # failed after the dataset scan
    ("epochs: ten", "epochs must be a number, got 'ten'"),
    ("format: PNG", "format must be one of"),
    ("momentum: -0.9", "momentum: must be 0 or more, got -0.9"),  # a traceback after the dataset scan
])
def test_config_file_values_meet_the_options_checks(tmp_path, capsys, line, message):
    """A value from the file is refused as its --flag would be, naming the file and setting."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(line + "\n")
    parser = config.export_parser() if line.startswith("format") else config.train_parser()
    with pytest.raises(SystemExit):
        config.resolve(parser, ["--config", str(bad)])
    err = capsys.readouterr().err
    assert "%s: %s" % (bad, message.split(":")[0]) in err and message in err, err


def test_config_file_numbers_written_as_strings_are_numbers(tmp_path):
    (tmp_path / "run.yaml").write_text('lr: "0.1"\nnum_classes: "10"\n')
    cfg = config.resolve(config.train_parser(), ["--config", str(tmp_path / "run.yaml")])
    assert (cfg.lr, cfg.num_classes) == (0.1, 10)


def test_resume_latest_in_a_config_file_stays_latest(tmp_path):
    """``resume: latest`` is the word, not a file named 'latest' beside the config file."""
    (tmp_path / "run.yaml").write_text("resume: latest\npretrained: weights/w.ckpt\n")
    cfg = config.resolve(config.train_parser(), ["--config", str(tmp_path / "run.yaml")])
    assert cfg.resume == "latest" and cfg.pretrained == str(tmp_path / "weights" / "w.ckpt")


def test_seed_defaults_and_schedules():
    d = config.DEFAULTS
    assert (d["batch_size"], d["epochs"], d["momentum"], d["weight_decay"], d["milestones"]) == (64, 100, 0.9, 1e-4, [30, 60, 90])
    lr = schedule.scaled_lr(8 * 64)  # 8 devices x 64: 0.2
    assert lr == pytest.approx(0.2)
    steps = schedule.learning_rates(lr, 100, 10)
    assert len(steps) == 1000
    for epoch, expected in ((0, 0.2), (29, 0.2), (30, 0.02), (59, 0.02), (60, 0.002), (90, 0.0002), (99, 0.0002)):
        assert steps[epoch * 10] == pytest.approx(expected, rel=1e-5)
    warm = schedule.learning_rates(0.1, 10, 4, warmup_epochs=2)
    np.testing.assert_allclose(warm[:8], 0.1 * np.arange(1, 9) / 8, rtol=1e-6)
    cos = schedule.learning_rates(0.1, 10, 4, "cosine", min_lr=0.001)
    assert cos[0] == pytest.approx(0.1, rel=1e-6) and np.all(np.diff(cos) <= 0)
    assert cos[-1] == pytest.approx(0.001 + 0.5 * 0.099 * (1 + np.cos(np.pi * 39 / 40)), rel=1e-5)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        schedule.learning_rates(0.1, 1, 1, "linear")


def test_amp_is_refused_on_cpu_with_a_clear_message(folder):
    assert resolve_amp("auto", "CPU") == "O0" and resolve_amp("auto", "GPU") == "O2"
    assert resolve_amp("O2", "Ascend") == "O2"
    with pytest.raises(TrainingError, match="needs a GPU or Ascend"):
        resolve_amp("O2", "CPU")
    proc = run_module("train", TINY + ["--train-dir", folder, "--amp-level", "O2"], check=False)
    assert proc.returncode == 2 and "--amp-level O2 needs a GPU or Ascend" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_amp_keeps_instance_norm_in_float32_and_parameter_names():
    """O2 as Model gets it: float16 cells, but IBN's IN (and BN) normalise in float32.
    Runs on CPU with only norms, slicing and concat, which the CPU backend has in float16."""
    from mindspore import dtype as mstype
    from train.loop import mixed_precision
    from train.models import IBN, InstanceNorm2d, create_model

    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        rng = np.random.default_rng(0)
        # deviations of several hundred: their squares overflow float16 in the reduction form
        x = (rng.standard_normal((2, 8, 6, 5)) * 150 + 300).astype(np.float32)
        ibn = IBN(8)
        ibn.IN.portable = True  # the form whose float16 overflow is visible on CPU
        ibn.set_train(True)
        reference = ibn(ms.Tensor(x)).asnumpy()
        mixed, model_level = mixed_precision(ibn, "O2")
        assert model_level == "O0"  # converted once, here; Model must not convert again
        out = mixed(ms.Tensor(x.astype(np.float16)))
        assert out.dtype == mstype.float32  # the network's output is cast back for the loss
        np.testing.assert_allclose(out.asnumpy(), reference, atol=0.02 * np.abs(reference).max())
        norms = [c for _, c in mixed.cells_and_names() if isinstance(c, (InstanceNorm2d, ms.nn.BatchNorm2d))]
        assert len(norms) == 2 and all(c.get_flags().get("fp32") for c in norms)
        assert mixed_precision(ibn, "O0") == (ibn, "O0") and mixed_precision(ibn, "O1") == (ibn, "O1")
        # O3 (BatchNorm in float16 too) still keeps IN in float32
        o3 = IBN(8)
        mixed, model_level = mixed_precision(o3, "O3")
        flags = {type(c).__name__: c.get_flags() for _, c in mixed.cells_and_names()
                 if isinstance(c, (InstanceNorm2d, ms.nn.BatchNorm2d))}
        assert model_level == "O0" and flags["InstanceNorm2d"].get("fp32") and flags["BatchNorm2d"].get("fp16")

        # checkpoints of an O2 run load into a float32 model: names unchanged by the conversion
        net = create_model("resnet_ibn_a_tiny", num_classes=3)
        before = [p.name for p in net.get_parameters()]
        mixed, _ = mixed_precision(net, "O2")
        assert [p.name for p in mixed.get_parameters()] == before
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("module", ["train", "train.eval", "train.export", "train.distributed"])
def test_help(module):
    out = run_module(module, ["--help"]).stdout
    assert "usage: python -m %s" % module in out
    if module != "train.distributed":
        assert "--device" in out and "--config" in out


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_eval_matches_a_manual_computation(folder, tmp_path):
    out = tmp_path / "run"
    proc = run_module("train", TINY + [
        "--train-dir", folder, "--val-dir", folder, "--batch-size", "6", "--epochs", "4", "--lr", "0.02",
        "--no-augment", "--eval-every", "2", "--keep-checkpoints", "2", "--output-dir", out,
    ])
    summary = last_json(proc.stdout)
    assert CORRUPT_NAME in proc.stdout and "skipping" in proc.stdout  # reported by name, not fatal
    assert any(CORRUPT_NAME in s for s in summary["skipped_images"])
    losses = summary["losses"]
    assert len(losses) == 4 * 3 and summary["epochs_completed"] == 4
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.8 * first, "loss did not drop: first epoch %.3f, last epoch %.3f" % (first, last)
    assert "img/s" in proc.stdout and summary["img_per_s"] > 0
    # eval every 2 epochs; the latest 2 checkpoints kept, plus the best one
    assert [e["epoch"] for e in summary["evals"]] == [2, 4]
    kept = sorted(p.name for p in out.glob("*.ckpt"))
    assert kept == ["best.ckpt", "resnet_ibn_a_tiny-e003.ckpt", "resnet_ibn_a_tiny-e004.ckpt"]
    assert json.loads((out / "summary.json").read_text())["global_step"] == 12
    best = max(summary["evals"], key=lambda e: e["top1"])
    assert summary["best"]["top1"] == best["top1"]

    # python -m train.eval on the best checkpoint: it knows its arch, classes and input size
    res = last_json(run_module("train.eval", ["--device", "CPU", "--checkpoint", out / "best.ckpt",
                                              "--val-dir", folder, "--batch-size", "5"]).stdout)
    assert res["images"] == 18 and res["image_size"] == 64 and res["top1"] == pytest.approx(best["top1"])

    # the same predictions by hand: logits of the eval network over the eval pipeline
    from train.eval import build_network, topk_hits

    ms.set_context(mode=ms.GRAPH_MODE)
    ckpt = read_checkpoint(out / "best.ckpt")
    assert ckpt.info.class_names == sorted(CLASSES) and ckpt.info.preprocess.semantics == "mindspore"
    assert ckpt.info.origin == "trained"  # recorded where the weights were made
    net = build_network(ckpt)
    val = data.scan_image_folder(folder, classes=ckpt.info.class_names, report=lambda m: None)
    logits, labels = [], []
    for img, lab in data.eval_dataset(val, 5, 64, 73, workers=2).create_tuple_iterator(output_numpy=True, num_epochs=1):
        logits.append(net(ms.Tensor(img)).asnumpy())
        labels.append(lab)
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    top5 = float(np.mean(topk_hits(logits, labels, 5)))
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)
    assert top5 == 1.0  # 3 classes: always within the top 5


def test_resume_continues_exactly_where_the_run_stopped(folder, tmp_path):
    """2 epochs straight == 1 epoch, stop, resume, 1 epoch (augmentation on, seeded)."""
    common = TINY + ["--train-dir", folder, "--batch-size", "6", "--epochs", "2", "--lr", "0.05",
                     "--lr-schedule", "step", "--milestones", "1", "--seed", "5"]
    run_module("train", common + ["--output-dir", tmp_path / "a", "--dump-weights", tmp_path / "a.npz"])
    stopped = last_json(run_module("train", common + ["--output-dir", tmp_path / "b", "--max-steps", "3"]).stdout)
    assert stopped["epochs_completed"] == 1 and stopped["global_step"] == 3
    resumed = run_module("train", common + ["--output-dir", tmp_path / "b", "--dump-weights", tmp_path / "b.npz",
                                            "--resume", tmp_path / "b" / "resnet_ibn_a_tiny-e001.ckpt"])
    summary = last_json(resumed.stdout)
    assert summary["start_epoch"] == 1 and summary["global_step"] == 6 and len(summary["losses"]) == 3
    assert "lr 0.005000" in resumed.stdout  # the step schedule after milestone 1 (x0.1)
    diff = max_weight_diff(load_dumped_weights(tmp_path / "a.npz")[0], load_dumped_weights(tmp_path / "b.npz")[0])
    print("resume max abs weight difference: %g" % diff)
    assert diff <= 1e-6


def test_resume_continues_the_runs_checkpoint_pruning_and_best_score(folder, tmp_path):
    """A resumed run counts the checkpoints already on disk towards --keep-checkpoints and
    replaces best.ckpt only with a better evaluation than the recorded one."""
    out = tmp_path / "run"
    common = TINY + ["--train-dir", folder, "--val-dir", folder, "--batch-size", "6", "--epochs", "3",
                     "--lr", "0.02", "--eval-every", "1", "--keep-checkpoints", "2", "--output-dir", out]
    first = last_json(run_module("train", common + ["--max-steps", "6"]).stdout)  # 2 of 3 epochs
    assert first["epochs_completed"] == 2 and len(first["evals"]) == 2
    assert sorted(p.name for p in out.glob("*.ckpt")) == [
        "best.ckpt", "resnet_ibn_a_tiny-e001.ckpt", "resnet_ibn_a_tiny-e002.ckpt"]
    recorded = json.loads((out / "best.json").read_text())
    assert recorded["top1"] == max(e["top1"] for e in first["evals"])
    assert recorded["source"] in ("resnet_ibn_a_tiny-e001.ckpt", "resnet_ibn_a_tiny-e002.ckpt")
    # Record a score no evaluation can beat: the resumed run's evaluation must leave best.ckpt alone.
    unbeatable = dict(recorded, top1=1.5)
    (out / "best.json").write_text(json.dumps(unbeatable))
    best_bytes = (out / "best.ckpt").read_bytes()

    resumed = last_json(run_module("train", common + ["--resume", "latest"]).stdout)
    assert resumed["start_epoch"] == 2 and resumed["epochs_completed"] == 3
    assert [e["epoch"] for e in resumed["evals"]] == [3]
    # e001 from before the resume was pruned: still only the latest 2 (+ best)
    assert sorted(p.name for p in out.glob("*.ckpt")) == [
        "best.ckpt", "resnet_ibn_a_tiny-e002.ckpt", "resnet_ibn_a_tiny-e003.ckpt"]
    assert resumed["checkpoints"] == [str(out / "resnet_ibn_a_tiny-e002.ckpt"), str(out / "resnet_ibn_a_tiny-e003.ckpt")]
    assert (out / "best.ckpt").read_bytes() == best_bytes
    assert resumed["best"]["top1"] == 1.5 and json.loads((out / "best.json").read_text())["top1"] == 1.5


def test_resume_latest_follows_the_newest_timeline(folder, tmp_path):
    """Resumed from an earlier checkpoint, a run redoes epochs whose old checkpoints are
    still on disk: they are kept (nothing lost), and --resume latest then continues the
    newest run, not the abandoned one that got further."""
    out = tmp_path / "run"
    common = TINY + ["--train-dir", folder, "--batch-size", "6", "--epochs", "3", "--lr", "0.02",
                     "--keep-checkpoints", "5", "--output-dir", out]
    run_module("train", common + ["--max-steps", "6"])  # e001, e002
    redo = last_json(run_module("train", common + ["--resume", out / "resnet_ibn_a_tiny-e001.ckpt",
                                                   "--max-steps", "4"]).stdout)
    assert redo["global_step"] == 4 and (out / "resnet_ibn_a_tiny-e002.ckpt").is_file()
    assert redo["checkpoints"] == [str(out / "resnet_ibn_a_tiny-e001.ckpt"), str(out / "resnet_ibn_a_tiny-e001-s00001.ckpt")]
    latest = run_module("train", common + ["--resume", "latest", "--max-steps", "5"])
    assert "resumed from %s at epoch 1, step 1" % (out / "resnet_ibn_a_tiny-e001-s00001.ckpt") in latest.stdout
    assert last_json(latest.stdout)["global_step"] == 5


@pytest.mark.slow
def test_resume_from_inside_an_epoch(folder, tmp_path):
    common = TINY + ["--train-dir", folder, "--batch-size", "6", "--epochs", "2", "--lr", "0.05", "--seed", "5"]
    run_module("train", common + ["--output-dir", tmp_path / "a", "--dump-weights", tmp_path / "a.npz"])
    run_module("train", common + ["--output-dir", tmp_path / "b", "--max-steps", "4"])
    assert (tmp_path / "b" / "resnet_ibn_a_tiny-e001-s00001.ckpt").is_file()
    run_module("train", common + ["--output-dir", tmp_path / "b", "--dump-weights", tmp_path / "b.npz",
                                  "--resume", "latest"])
    a, b = load_dumped_weights(tmp_path / "a.npz")[0], load_dumped_weights(tmp_path / "b.npz")[0]
    assert max_weight_diff(a, b) <= 1e-6


def test_optional_training_settings_run(folder, tmp_path):
    """Warmup + cosine, label smoothing, no weight decay on norms/biases, BN frozen."""
    proc = run_module("train", TINY + [
        "--train-dir", folder, "--batch-size", "6", "--epochs", "2", "--max-steps", "2", "--lr", "0.05",
        "--lr-schedule", "cosine", "--warmup-epochs", "1", "--label-smoothing", "0.1", "--no-wd-norm-bias",
        "--freeze-bn", "--output-dir", tmp_path / "opt",
    ])
    summary = last_json(proc.stdout)
    assert summary["global_step"] == 2 and all(np.isfinite(summary["losses"]))
    assert "lr 0.016667" in proc.stdout and "lr 0.033333" in proc.stdout  # warmup: 1/3, 2/3 of 0.05
    assert "BatchNorm frozen" in proc.stdout


def test_bench_interleaves_both_frameworks_and_reports_per_round_ratios(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")
    out = tmp_path / "bench.json"
    proc = run_module("train.bench", ["--arch", "resnet_ibn_a_tiny", "--size", "64", "--steps", "3",
                                      "--images", "64", "--json-out", out])
    result = json.loads(out.read_text())
    assert result == last_json(proc.stdout)
    ms_part, torch_part = result["mindspore"], result["torch"]
    assert ms_part["steps"] == torch_part["steps"] == 3
    assert ms_part["median_step_s"] == pytest.approx(float(np.median(ms_part["step_s"])))
    assert ms_part["img_per_s"] == pytest.approx(16 / ms_part["median_step_s"])
    ratios = [t / m for m, t in zip(ms_part["step_s"], torch_part["step_s"])]
    assert ms_part["vs_torch_per_round"] == pytest.approx(ratios)
    assert result["mindspore_vs_torch"] == pytest.approx(float(np.median(ms_part["vs_torch_per_round"])))
    assert result["data"]["img_per_s"] > 0 and result["data"]["workers"] >= 1
    assert result["data_vs_mindspore_step"] == pytest.approx(result["data"]["img_per_s"] / ms_part["img_per_s"])
    bad = run_module("train.bench", ["--parts", "mindspore,tensorflow"], check=False)
    assert bad.returncode == 2 and "unknown part(s) tensorflow" in bad.stdout


# ----------------------------------------------------------------------------- transfer learning


@pytest.mark.parametrize("kind", ["pth", "ckpt"])
def test_fine_tune_from_converted_weights(folder, tmp_path, kind):
    pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")
    from train.convert import convert_file, convert_state_dict
    from ibnedge.pth_reader import load_state_dict

    pth = tmp_path / "tiny_imagenet.pth"
    save_reference_pth(pth)
    pretrained = pth
    if kind == "ckpt":
        pretrained = tmp_path / "tiny_imagenet.ckpt"
        convert_file(pth, pretrained, arch="resnet_ibn_a_tiny")
    source, _ = convert_state_dict(load_state_dict(pth), "resnet_ibn_a_tiny")

    out = tmp_path / "ft"
    proc = run_module("train", TINY + [
        "--train-dir", folder, "--batch-size", "6", "--epochs", "1", "--lr", "0.05", "--pretrained", pretrained,
        "--freeze", "stem,layer1", "--output-dir", out, "--dump-weights", tmp_path / "ft.npz",
    ])
    assert "classifier replaced" in proc.stdout and "fc.weight 1000x128 -> 3x128" in proc.stdout
    trained = read_checkpoint(out / "resnet_ibn_a_tiny-e001.ckpt").params
    assert trained["fc.weight"].shape == (3, 128) and trained["fc.bias"].shape == (3,)
    frozen = [k for k in source if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert len(frozen) > 10 and any("moving_mean" in k for k in frozen)
    for name in frozen:  # weights AND running statistics of the frozen parts
        np.testing.assert_array_equal(trained[name], source[name], err_msg=name)
    dumped = load_dumped_weights(tmp_path / "ft.npz")[0]
    assert not any(k.startswith(("conv1.", "bn1.", "layer1.")) for k in dumped)  # not trainable
    changed = [k for k in source if k.startswith("layer3.") and not np.array_equal(trained[k], source[k])]
    assert changed, "the unfrozen backbone did not train"
    assert np.allclose(trained["layer4.0.conv1.weight"], source["layer4.0.conv1.weight"], atol=0.05)  # loaded, then fine-tuned


# ----------------------------------------------------------------------------- refused before the data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts file opens with Linux inotify")
@pytest.mark.parametrize("case", ["arch", "pretrained", "resume", "freeze", "warmup", "min_lr", "val_dir",
                                  "label_smoothing"])
def test_settings_are_refused_before_any_image_is_read(case, folder, tmp_path):
    """A typo'd --arch, a missing --pretrained, a --resume with nothing to resume, a --freeze
    that matches nothing, lr schedule settings that contradict each other, a missing --val-dir
    and a value wrong whatever the data end the run before the dataset scan, which reads
    every file (minutes on a large set): no class folder is even listed."""
    bad, message = {
        "arch": (["--arch", "resnet_ibn_a_tinyy"], "unknown model 'resnet_ibn_a_tinyy': did you mean: resnet_ibn_a_tiny"),
        "pretrained": (["--pretrained", tmp_path / "missing.pth"], "missing.pth: checkpoint not found"),
        "resume": (["--resume", "latest"], "--resume latest: no checkpoint in %s" % (tmp_path / "run")),
        "freeze": (["--freeze", "layer9"], "--freeze layer9 matches no parameter"),
        "warmup": (["--epochs", "2", "--warmup-epochs", "3"], "warmup_epochs must be within [0, epochs=2], got 3"),
        "min_lr": (["--lr-schedule", "cosine", "--lr", "0.01", "--min-lr", "0.1"],
                   "min_lr must be within [0, lr=0.01] for the cosine schedule, got 0.1"),
        "val_dir": (["--val-dir", tmp_path / "missing"], "missing: dataset folder not found"),
        "label_smoothing": (["--label-smoothing", "1.5"], "argument --label-smoothing: must be in [0, 1), got 1.5"),
    }[case]
    watch = FileOpens([folder / name for name in CLASSES])
    try:
        proc = run_module("train", TINY + ["--train-dir", folder, "--batch-size", "6", "--epochs", "1",
                                           "--output-dir", tmp_path / "run"] + bad, check=False)
        opened = watch.opened()
    finally:
        watch.close()
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 2 and message in lines[-1], proc.stdout
    assert lines[-1].split("error: ", 1)[0] in ("", "python -m train: "), lines[-1]  # ours, or argparse's
    assert opened == [], "opened before the refusal: %s" % ", ".join(opened[:10])
    assert not (tmp_path / "run" / config.RUN_CONFIG).exists()  # a refused run leaves no config behind


# ----------------------------------------------------------------------------- what a run leaves


def test_config_yaml_repeats_the_run_from_any_directory(folder, tmp_path):
    """config.yaml beside the checkpoints: the resolved settings (defaults < --config < flags),
    paths absolute. ``--config`` with it, run from another folder, resolves to the same
    settings (it writes the same file again) and trains the same run."""
    import yaml

    os.symlink(str(folder), str(tmp_path / "photos"))
    (tmp_path / "recipe.yaml").write_text("epochs: 2\nbatch-size: 6\nlr: 0.02\ntrain-dir: photos\nmilestones: [1]\n")
    first = run_module("train", TINY + ["--config", "recipe.yaml", "--val-dir", "photos", "--output-dir", "runs/x",
                                        "--max-steps", "4", "--seed", "3"], cwd=tmp_path)
    saved_path = tmp_path / "runs" / "x" / config.RUN_CONFIG
    saved_text = saved_path.read_text()
    saved = yaml.safe_load(saved_text)
    assert saved["train_dir"] == str(tmp_path / "photos")  # from recipe.yaml: relative to that file
    assert saved["val_dir"] == str(tmp_path / "photos") and saved["output_dir"] == str(tmp_path / "runs" / "x")
    assert (saved["epochs"], saved["batch_size"], saved["lr"], saved["milestones"]) == (2, 6, 0.02, [1])
    assert (saved["arch"], saved["image_size"], saved["max_steps"], saved["seed"]) == ("resnet_ibn_a_tiny", 64, 4, 3)
    assert saved["momentum"] == 0.9 and saved["resume"] is None and "config" not in saved
    assert list(saved) == [n for n in config.train_parser().settings  # every setting of the run, --help order
                           if n not in config.INVOCATION_SETTINGS]

    again = run_module("train", ["--config", Path("x") / config.RUN_CONFIG], cwd=tmp_path / "runs")
    assert saved_path.read_text() == saved_text
    reloaded = config.resolve(config.train_parser(), ["--config", str(saved_path)])
    assert {k: getattr(reloaded, k) for k in saved} == saved
    overridden = config.resolve(config.train_parser(), ["--config", str(saved_path), "--lr", "0.05", "--milestones", "2"])
    assert {k: getattr(overridden, k) for k in saved} == dict(saved, lr=0.05, milestones=[2])  # flags still win
    a, b = last_json(first.stdout), last_json(again.stdout)
    assert b["global_step"] == a["global_step"] == 4 and b["losses"] == pytest.approx(a["losses"], abs=1e-5)


def test_best_checkpoint_is_replaced_not_overwritten(folder, tmp_path):
    """A better evaluation renames a new best.ckpt into place: whoever holds the old file (an
    export reading it; here a hard link, the same inode) keeps its bytes, and a kill during
    the copy leaves the old file whole. The temporary name is never taken for a checkpoint."""
    out = tmp_path / "run"
    common = TINY + ["--train-dir", folder, "--val-dir", folder, "--batch-size", "6", "--epochs", "2",
                     "--lr", "0.02", "--output-dir", out]
    run_module("train", common + ["--max-steps", "3"])  # epoch 1, evaluated: best.ckpt
    held = tmp_path / "held.ckpt"
    os.link(str(out / "best.ckpt"), str(held))
    old = held.read_bytes()
    score = json.loads((out / "best.json").read_text())
    (out / "best.json").write_text(json.dumps(dict(score, top1=-1.0)))  # any evaluation beats it

    resumed = last_json(run_module("train", common + ["--resume", "latest"]).stdout)
    assert resumed["best"]["source"] == "resnet_ibn_a_tiny-e002.ckpt"
    new = (out / "best.ckpt").read_bytes()
    assert new == (out / "resnet_ibn_a_tiny-e002.ckpt").read_bytes() and new != old
    assert held.read_bytes() == old, "best.ckpt was rewritten in place: its old readers saw the new bytes"
    assert sorted(p.name for p in out.iterdir() if "partial" in p.name) == []


def test_no_import_cycle_in_train():
    """train.eval took setup_context from train.loop, which takes metrics from train.eval:
    the context lives in train.context now, and no module of train/ imports itself back."""
    from edge_helpers import REPO
    from import_cycles import import_cycles

    assert import_cycles(REPO, "train") == []
