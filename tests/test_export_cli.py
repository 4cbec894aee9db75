"""python -m train.export: MINDIR/ONNX round trips against the eval network, metadata JSON,
and the ONNX file through MindSpore Lite 2.0's converter (Python 3.7 environment)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")

from ibnedge.metadata import ModelMetadata, imagenet_class_names, load_for_model  # noqa: E402
from train.checkpoint import read_checkpoint, save_run_checkpoint  # noqa: E402
from train.eval import build_network  # noqa: E402
from train.models import create_model  # noqa: E402
from train_helpers import CLASSES as TRAIN_CLASSES  # noqa: E402
from train_helpers import REPO, FileOpens, last_json, randomise_norms, relative_error, run_module, save_reference_pth  # noqa: E402

pytestmark = pytest.mark.needs_mindspore

CLASSES = list(TRAIN_CLASSES)
VENV37_PYTHON = REPO / ".venv37" / "bin" / "python"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run checkpoint as python -m train writes it (weights perturbed away from init)."""
    root = tmp_path_factory.mktemp("export")
    ms.set_seed(3)
    net = randomise_norms(create_model("resnet_ibn_a_tiny", num_classes=3), seed=3)
    info = ModelMetadata.describe("resnet_ibn_a_tiny", 3, origin="trained", source="run", crop=64, resize=73,
                                  class_names=CLASSES)
    ckpt = save_run_checkpoint(net, root / "run.ckpt", info, epoch=3, step_in_epoch=0)
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    ms.set_context(mode=ms.GRAPH_MODE)
    reference = build_network(read_checkpoint(ckpt))(ms.Tensor(x)).asnumpy()
    return {"root": root, "ckpt": ckpt, "x": x, "reference": reference}


def _export(ckpt: Path, out: Path, fmt: str, *extra) -> dict:
    proc = run_module("train.export", ["--device", "CPU", "--checkpoint", ckpt, "--format", fmt, "--output", out, *extra])
    return last_json(proc.stdout)


def _check_metadata(path: Path, batch: int) -> ModelMetadata:
    raw = json.loads(path.with_suffix(".json").read_text())
    assert set(raw) == {"version", "arch", "num_classes", "class_names", "input_shape", "preprocess", "source",
                        "origin"}
    assert raw["version"] == 2 and raw["origin"] == "trained"
    meta = load_for_model(path)
    assert meta.arch == "resnet_ibn_a_tiny" and meta.num_classes == 3 and meta.class_names == CLASSES
    assert list(meta.input_shape) == [batch, 3, 64, 64]
    spec = meta.preprocess
    assert (spec.resize, spec.crop, spec.semantics) == (73, (64, 64), "mindspore")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    return meta


def test_mindir_round_trip_through_graphcell(trained):
    out = trained["root"] / "tiny.mindir"
    summary = _export(trained["ckpt"], out, "mindir")
    assert summary["model"] == str(out) and out.is_file()
    _check_metadata(out, -1)
    from mindspore import nn

    graph = nn.GraphCell(ms.load(str(out)))
    for n in (3, 1):  # dynamic batch
        got = graph(ms.Tensor(trained["x"][:n])).asnumpy()
        err = relative_error(got, trained["reference"][:n])
        print("MINDIR batch %d relative error %.3g" % (n, err))
        assert err <= 1e-4


def test_onnx_round_trip_and_lite_compatibility(trained):
    import onnx
    import onnxruntime as ort

    out = trained["root"] / "tiny.onnx"
    _export(trained["ckpt"], out, "ONNX")
    _check_metadata(out, -1)
    model = onnx.load(str(out))
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert pools and not any(a.name == "dilations" for n in pools for a in n.attribute)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for n in (3, 2):
        got = session.run(None, {name: trained["x"][:n]})[0]
        err = relative_error(got, trained["reference"][:n])
        print("ONNX batch %d relative error %.3g" % (n, err))
        assert err <= 1e-4


def test_onnx_fixed_batch(trained):
    import onnxruntime as ort

    out = trained["root"] / "tiny_b2.onnx"
    _export(trained["ckpt"], out, "ONNX", "--export-batch", "2")
    _check_metadata(out, 2)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 64, 64]
    got = session.run(None, {session.get_inputs()[0].name: trained["x"][:2]})[0]
    assert relative_error(got, trained["reference"][:2]) <= 1e-4


# Converting and running in one Lite 2.0 process crashes (SIGSEGV); each gets its own.
_LITE_CONVERT = """
import sys
from ibnedge.convert import convert_to_lite

convert_to_lite(sys.argv[1], sys.argv[2])
"""
_LITE_RUN = """
import sys
import numpy as np
import mindspore_lite as mslite

x = np.load(sys.argv[2])
context = mslite.Context()
context.target = ["cpu"]
context.cpu.thread_num = 1
model = mslite.Model()
model.build_from_file(sys.argv[1], mslite.ModelType.MINDIR, context)
inputs = model.get_inputs()
model.resize(inputs, [list(x.shape)])
inputs[0].set_data_from_numpy(x)
np.save(sys.argv[3], model.predict(inputs)[0].get_data_to_numpy())
"""


def _python37(script: str, args, cwd: Path) -> None:
    proc = subprocess.run([str(VENV37_PYTHON), "-c", script] + [str(a) for a in args], cwd=str(cwd),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, "Python 3.7 / Lite 2.0 step failed (%d):\n%s" % (proc.returncode, proc.stdout[-4000:])


@pytest.mark.needs_lite
@pytest.mark.skipif(not VENV37_PYTHON.exists(), reason="needs .venv37 with mindspore-lite 2.0 (make venv37)")
def test_onnx_converts_and_runs_in_mindspore_lite_2_0(trained, tmp_path):
    onnx_path = trained["root"] / "tiny.onnx"
    if not onnx_path.exists():
        _export(trained["ckpt"], onnx_path, "ONNX")
    lite = tmp_path / "tiny_lite.mindir"
    np.save(str(tmp_path / "x.npy"), trained["x"])
    _python37(_LITE_CONVERT, [onnx_path, lite], tmp_path)
    _python37(_LITE_RUN, [lite, tmp_path / "x.npy", tmp_path / "y.npy"], tmp_path)
    err = relative_error(np.load(str(tmp_path / "y.npy")), trained["reference"])
    print("Lite 2.0 (converted ONNX) relative error %.3g" % err)
    assert err <= 1e-4


def test_converted_official_weights_export_with_imagenet_names_and_pil_semantics(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")
    pth = save_reference_pth(tmp_path / "resnet_ibn_a_tiny-0000.pth")
    out = tmp_path / "official.onnx"
    _export(pth, out, "ONNX", "--arch", "resnet_ibn_a_tiny", "--image-size", "64", "--resize", "73")
    meta = load_for_model(out)
    assert meta.num_classes == 1000 and meta.class_names == imagenet_class_names()
    assert meta.class_names[0] == "tench" and len(set(meta.class_names)) == 1000
    assert meta.preprocess.semantics == "pil" and meta.source == pth.name


def test_converted_ckpt_describes_itself_to_eval_and_export(tmp_path):
    """python -m train.convert writes a .ckpt that says what it holds: train.eval and
    train.export take it without --arch (and refuse a contradicting --arch); a bare
    .ckpt without that record is described from its parameters."""
    pytest.importorskip("torch", reason="the PyTorch reference is a test-only dependency")
    from train.convert import convert_state_dict, save_params
    from ibnedge.pth_reader import load_state_dict
    from train_helpers import make_image_folder

    pth = save_reference_pth(tmp_path / "tiny_official.pth")
    ckpt = tmp_path / "tiny_official.ckpt"
    run_module("train.convert", [pth, ckpt])  # architecture inferred from the keys
    info = read_checkpoint(ckpt).info
    assert (info.arch, info.num_classes, info.preprocess.semantics, info.source) == ("resnet_ibn_a_tiny", 1000, "pil",
                                                                                pth.name)
    assert info.origin == "official"

    # an ImageNet-style val folder: two of the 1000 classes, by WordNet id
    photos = make_image_folder(tmp_path / "photos", per_class=2, size=72, corrupt=False)
    val = tmp_path / "val"
    val.mkdir()
    for wnid, name in zip(("n01440764", "n01443537"), ("astronaut", "chelsea")):
        (photos / name).rename(val / wnid)
    res = last_json(run_module("train.eval", ["--device", "CPU", "--checkpoint", ckpt, "--val-dir", val,
                                              "--image-size", "64", "--resize", "73"]).stdout)
    assert res["arch"] == "resnet_ibn_a_tiny" and res["images"] == 4 and 0.0 <= res["top1"] <= res["top5"] <= 1.0

    wrong = run_module("train.eval", ["--device", "CPU", "--checkpoint", ckpt, "--val-dir", val,
                                      "--arch", "resnet18_ibn_a"], check=False)
    assert wrong.returncode == 2 and "holds resnet_ibn_a_tiny weights, not --arch resnet18_ibn_a" in wrong.stdout
    assert "Traceback" not in wrong.stdout

    # a bare .ckpt (no model record): inferred, exported as converted official weights
    bare = tmp_path / "bare.ckpt"
    params, _ = convert_state_dict(load_state_dict(pth), "resnet_ibn_a_tiny")
    save_params(params, bare)
    assert read_checkpoint(bare).info.arch == "resnet_ibn_a_tiny"
    out = tmp_path / "bare.mindir"
    _export(bare, out, "MINDIR", "--image-size", "64", "--resize", "73")
    meta = load_for_model(out)
    assert meta.arch == "resnet_ibn_a_tiny" and meta.num_classes == 1000 and meta.preprocess.semantics == "pil"
    assert meta.class_names == imagenet_class_names() and meta.source == bare.name

    unknown = tmp_path / "unknown.ckpt"  # parameters of no registered architecture
    save_params({"encoder.weight": np.zeros((4, 4), np.float32)}, unknown)
    assert read_checkpoint(unknown).info is None
    with pytest.raises(ValueError, match="cannot be inferred; pass --arch"):
        build_network(read_checkpoint(unknown))


def test_an_untrained_export_is_not_labelled_as_official_weights(tmp_path):
    """``train.export --arch`` without a checkpoint exports train/'s own initialisation: its
    record says origin random-init and mindspore semantics, never pil (official weights)."""
    out = tmp_path / "fresh.onnx"
    run_module("train.export", ["--device", "CPU", "--arch", "resnet_ibn_a_tiny", "--image-size", "32",
                                "--format", "ONNX", "--output", out])
    meta = load_for_model(out)
    assert (meta.source, meta.preprocess.semantics) == ("random-init", "mindspore")
    assert meta.origin == "random-init"
    assert meta.input_shape == (-1, 3, 32, 32)


@pytest.mark.parametrize("semantics,origin", [("mindspore", "trained"), ("pil", "official")])
def test_a_checkpoint_written_before_the_shared_record_still_loads_and_exports(tmp_path, semantics, origin):
    """A .ckpt as train/ wrote it before ModelMetadata was its record (entry ``ibnedge_info``,
    the old ModelInfo JSON, written here by hand): read, evaluated at its own sizes and
    exported with a version 2 record whose origin follows the old semantics."""
    from train.model_info import LEGACY_INFO_KEY

    old = {"arch": "resnet_ibn_a_tiny", "num_classes": 3, "class_names": CLASSES, "image_size": 64, "resize": 73,
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "semantics": semantics, "source": "old-run"}
    ms.set_seed(4)
    ckpt = tmp_path / "old.ckpt"
    ms.save_checkpoint(create_model("resnet_ibn_a_tiny", num_classes=3), str(ckpt),
                       append_dict={LEGACY_INFO_KEY: json.dumps(old), "epoch": 2, "step_in_epoch": 0})
    read = read_checkpoint(ckpt)
    info = read.info
    assert (info.arch, info.num_classes, info.class_names, info.source) == ("resnet_ibn_a_tiny", 3, CLASSES, "old-run")
    spec = info.preprocess
    assert (spec.crop, spec.resize, spec.semantics, spec.mean, spec.std, info.origin) == (
        (64, 64), 73, semantics, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), origin)
    assert read.epoch == 2 and LEGACY_INFO_KEY not in read.params
    out = tmp_path / "old.onnx"
    _export(ckpt, out, "ONNX")
    raw = json.loads(out.with_suffix(".json").read_text())
    assert (raw["version"], raw["origin"], raw["input_shape"], raw["preprocess"]["semantics"]) == (
        2, origin, [-1, 3, 64, 64], semantics)


def test_air_is_refused_off_ascend_and_bad_input_is_one_line(trained, tmp_path):
    proc = run_module("train.export", ["--device", "CPU", "--checkpoint", trained["ckpt"], "--format", "AIR",
                                       "--output", tmp_path / "m.air"], check=False)
    assert proc.returncode == 2 and "AIR export needs MindSpore running on an Ascend device" in proc.stdout
    assert "Traceback" not in proc.stdout and not (tmp_path / "m.air").exists()
    proc = run_module("train.export", ["--checkpoint", tmp_path / "missing.ckpt"], check=False)
    assert proc.returncode == 2 and "missing.ckpt: checkpoint not found" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts file opens with Linux inotify")
@pytest.mark.parametrize("case", ["export_batch", "missing_names", "empty_names", "names_count"])
def test_export_settings_are_refused_in_one_line_before_the_model_is_built(case, trained, tmp_path):
    """A negative --export-batch and an unreadable --class-names file are refused before the
    checkpoint is even opened; class names that do not fit the model's classes once the
    checkpoint says how many (they were a ValueError traceback after building the model)."""
    ckpt = tmp_path / "ckpt" / "run.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(str(trained["ckpt"]), str(ckpt))
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    bad, message, opens_checkpoint = {
        "export_batch": (["--export-batch", "-2"], "argument --export-batch: must be 0 or more, got -2", False),
        "missing_names": (["--class-names", tmp_path / "missing.txt"], "missing.txt", False),
        "empty_names": (["--class-names", tmp_path / "empty.txt"], "empty.txt: no class names", False),
        "names_count": (["--class-names", tmp_path / "two.txt"],
                        "two.txt: 2 class names for a 3-class model; give one line per class", True),
    }[case]
    out = tmp_path / "out" / "m.mindir"
    watch = FileOpens([ckpt.parent])
    try:
        proc = run_module("train.export", ["--device", "CPU", "--checkpoint", ckpt, "--output", out] + bad, check=False)
        opened = watch.opened()
    finally:
        watch.close()
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 2 and "error: " in last and message in last, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and not out.parent.exists()
    assert bool(opened) == opens_checkpoint, opened
