"""``ibnedge convert --device ascend``: the converter configuration an Ascend chip needs.

No Ascend toolkit can be had here, so the conversion itself stops after writing the
configuration (exit 2, with the exact converter_lite command for the box). What runs on a
CPU is checked for real: the files and their keys, the metadata, the ONNX input read
without the onnx package, the limits, and that MindSpore Lite 2.0's own converter parses
the configuration it is given.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from edge_helpers import have, make_tiny_onnx, run_py
from ibnedge.ascend_config import FP32_OPS, MAX_PROFILES, AscendConfigError, AscendSettings
from ibnedge.convert import ConvertError, FinishOnBox, convert_to_lite
from ibnedge.metadata import load_for_model, metadata_path
from ibnedge.onnx_info import OnnxFormatError, graph_inputs

PY = Path(sys.executable)
needs_lite = pytest.mark.skipif(not have("mindspore_lite"), reason="mindspore_lite not installed (Python 3.7 env)")


def _keys(ini: Path):
    """{section: {key: value}} the way Lite's reader sees it (whole-line # comments)."""
    sections, current = {}, None
    for line in ini.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=")  # exactly one '=' per line, as Lite's reader demands
        current[key] = value
    return sections


def _cli(*args, **kw):
    return run_py(PY, ["-m", "ibnedge"] + [str(a) for a in args], **kw)


@pytest.fixture
def onnx_model(tmp_path):
    return make_tiny_onnx(tmp_path / "net.onnx", size=32)


def test_profiles_config_mixed_precision_and_the_command_for_the_box(onnx_model, tmp_path):
    proc = _cli("convert", onnx_model, "--to", "lite", "--device", "ascend", "--batch", "32,1,8",
                env={"ASCEND_HOME_PATH": ""})
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, err
    assert "no Ascend toolkit here" in err[0] and "finish on the Ascend box with: cd " in err[0]
    ini = tmp_path / "net_lite.ascend.ini"
    keys = _keys(ini)
    assert keys["ascend_context"] == {
        "input_format": "NCHW", "input_shape": "x:[-1,3,32,32]", "dynamic_dims": "[1],[8],[32]",
        "precision_mode": "preferred_optimal", "output_type": "FP32",
    }
    assert "insert_op_config_file_path" not in keys["ascend_context"]  # AIPP off
    assert keys["acl_init_options"] == {"ge.socVersion": "Ascend310"}
    assert keys["acl_build_options"] == {"ge.exec.modify_mixlist": "net_lite.mixlist.json"}
    mixlist = json.loads((tmp_path / "net_lite.mixlist.json").read_text())
    assert mixlist == {"black-list": {"to-add": list(FP32_OPS)}}
    assert {"ReduceMean", "Sub", "Mul", "Sqrt", "MatMulV2", "InstanceNorm"} <= set(FP32_OPS)
    # Every key written carries the page that documents it.
    text = ini.read_text()
    assert text.count("https://www.mindspore.cn/lite/docs/en/r2.2/use/cloud_infer/converter_tool_ascend.html") >= 3
    assert "https://www.hiascend.com/document/detail/en/canncommercial/800/devaids/atc/atlasatcparam_16_0071.html" in text
    # The command: run in the output's folder, everything relative, no --inputShape for profiles.
    command = err[0].split("finish on the Ascend box with: ", 1)[1]
    assert command == "cd %s && converter_lite --fmk=ONNX --modelFile=net.onnx --outputFile=net_lite " \
                      "--saveType=MINDIR --optimize=ascend_oriented --configFile=net_lite.ascend.ini" \
                      % shlex.quote(str(tmp_path.resolve()))
    assert "#   " + command in text
    meta = load_for_model(tmp_path / "net_lite.mindir")
    assert meta.input_shape == (-1, 3, 32, 32)
    dep = meta.deployment
    assert (dep.device, dep.soc, dep.batch_profiles, dep.precision) == ("ascend", "Ascend310", (1, 8, 32), "mixed")
    assert not (tmp_path / "net_lite.mindir").exists()


def test_static_batch_soc_and_precision_with_config_only(onnx_model, tmp_path):
    out = tmp_path / "box" / "s8.mindir"
    proc = _cli("convert", onnx_model, "--to", "lite", "--device", "ascend", "--batch", "8", "--soc", "Ascend310P",
                "--precision", "fp32", "--config-only", "-o", out)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and "(--config-only); convert on the Ascend box with: " in err, err
    assert err.endswith("--configFile=s8.ascend.ini --inputShape=x:8,3,32,32")
    assert "--modelFile=../net.onnx" in err
    keys = _keys(out.with_name("s8.ascend.ini"))
    assert keys["ascend_context"]["input_shape"] == "x:[8,3,32,32]" and "dynamic_dims" not in keys["ascend_context"]
    assert keys["ascend_context"]["precision_mode"] == "preferred_fp32"
    assert keys["acl_init_options"] == {"ge.socVersion": "Ascend310P3"}
    assert "acl_build_options" not in keys  # no mixed-precision list outside "mixed"
    dep = load_for_model(out).deployment
    assert (dep.soc, dep.batch_profiles, dep.precision) == ("Ascend310P", (8,), "fp32")
    assert load_for_model(out).input_shape == (8, 3, 32, 32)


def test_a_toolkit_without_its_compiler_still_means_finish_on_the_box(onnx_model, tmp_path, monkeypatch):
    toolkit = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    toolkit.mkdir(parents=True)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(toolkit))
    with pytest.raises(FinishOnBox, match=r"has no model compiler \(atc\): finish on the Ascend box") as info:
        convert_to_lite(onnx_model, device="ascend", batch_sizes=[4])
    assert info.value.files.config.is_file() and info.value.files.command[0] == "converter_lite"


@pytest.mark.parametrize("kw, message", [
    ({"device": "ascend"}, "--device ascend needs --batch"),
    ({"device": "ascend", "batch_sizes": list(range(1, MAX_PROFILES + 2))}, "at most 100 batch profiles, got 101"),
    ({"device": "ascend", "batch_sizes": [1, 2049]}, "batch profiles go up to 2048, got 2049"),
    ({"device": "ascend", "batch_sizes": [8], "fp16": True}, "--fp16 is for CPU models"),
    ({"device": "ascend", "batch_sizes": [8], "optimize": "general"}, "converts with --optimize ascend_oriented"),
    ({"batch_sizes": [8], "soc": "Ascend310"}, "--soc, --precision and --config-only are for --device ascend"),
    ({"device": "ascend", "batch_sizes": [8], "soc": "Ascend320"}, "unknown --soc 'Ascend320'"),
    ({"device": "gpu"}, "unknown --device 'gpu' for convert"),
])
def test_settings_the_converter_would_refuse_are_refused_first(onnx_model, kw, message):
    with pytest.raises(ConvertError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_to_lite(onnx_model, **kw)
    assert not any(p.suffix == ".ini" for p in onnx_model.parent.iterdir())


def test_input_names_the_config_cannot_hold_are_refused():
    with pytest.raises(AscendConfigError, match="cannot be written into the converter's input_shape"):
        AscendSettings("in:put", (3, 224, 224), (8,))


def test_onnx_inputs_are_read_without_the_onnx_package(tmp_path):
    onnx = pytest.importorskip("onnx")
    assert graph_inputs(make_tiny_onnx(tmp_path / "d.onnx")) == [("x", ["N", 3, 32, 32])]
    assert graph_inputs(make_tiny_onnx(tmp_path / "s.onnx", batch=4)) == [("x", [4, 3, 32, 32])]
    # IR version 3 files list the initializers among the inputs: they are not real inputs.
    model = onnx.load(str(tmp_path / "d.onnx"))
    model.ir_version = 3
    model.graph.input.extend([onnx.helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [8, 3, 3, 3])])
    onnx.save(model, str(tmp_path / "ir3.onnx"))
    assert graph_inputs(tmp_path / "ir3.onnx") == [("x", ["N", 3, 32, 32])]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff")  # field 7, length-delimited, with a truncated length
    with pytest.raises(OnnxFormatError, match=r"bad\.onnx is not a readable ONNX model \(truncated varint\)"):
        graph_inputs(bad)


@needs_lite
def test_lite_converter_parses_the_written_configuration(onnx_model, tmp_path):
    """Lite 2.0's converter reads the file with its own parser (on CPU it then ignores the
    Ascend sections); a line it cannot parse fails the same conversion."""
    import mindspore_lite as mslite

    with pytest.raises(FinishOnBox) as info:
        convert_to_lite(onnx_model, device="ascend", batch_sizes=[1, 8], config_only=True)
    ini = info.value.files.config

    def convert(config):
        converter = mslite.Converter()
        converter.optimize = "general"
        converter.save_type = mslite.ModelType.MINDIR
        converter.convert(mslite.FmkType.ONNX, str(onnx_model), str(tmp_path / "parsed"), config_file=str(config))

    cwd = os.getcwd()
    os.chdir(str(ini.parent))
    try:
        convert(ini)
        assert (tmp_path / "parsed.mindir").is_file()
        broken = tmp_path / "broken.ini"
        broken.write_text(ini.read_text().replace("input_format=NCHW", "input_format=NCHW=NHWC"))
        with pytest.raises(RuntimeError):
            convert(broken)
    finally:
        os.chdir(cwd)


def _onnx_with_input(path, dims, meta_from=None, extra_inputs=()):
    """An Identity graph whose input has ``dims`` (ints, -1, or names), with the tiny model's
    metadata beside it when ``meta_from`` is given."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in extra_inputs]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    onnx.save(helper.make_model(graph), str(path))
    if meta_from is not None:
        metadata_path(path).write_text(metadata_path(meta_from).read_text())
    return path


def test_an_int64_dim_of_minus_one_is_read_as_minus_one_and_the_metadata_fills_it(onnx_model, tmp_path):
    """Protobuf writes int64 -1 as a ten-byte varint (2**64 - 1): read unsigned, it became an
    18-digit height in the converter's input_shape instead of the metadata's 32."""
    model = _onnx_with_input(tmp_path / "neg.onnx", ["N", 3, -1, -1], meta_from=onnx_model)
    assert graph_inputs(model) == [("x", ["N", 3, -1, -1])]
    with pytest.raises(FinishOnBox) as info:
        convert_to_lite(model, device="ascend", batch_sizes=[8], config_only=True)
    assert _keys(info.value.files.config)["ascend_context"]["input_shape"] == "x:[8,3,32,32]"


@pytest.mark.parametrize("dims, with_meta, message", [
    (["N", 32, 32, 3], True, r"has shape \['N', 32, 32, 3\] but its metadata \(nhwc.json\) says \[-1, 3, 32, 32\]"),
    (["N", 10], True, r"has shape \['N', 10\] but its metadata"),
    (["N", 3, 32, 32, 1], False, r"has shape \['N', 3, 32, 32, 1\]; ibnedge feeds NCHW images"),
    (["N", 1, 32, 32], False, r"static batch sizes need C = 3"),
    (["N", 3, "H", "W"], False, r"and a fixed H and W \(or metadata"),
])
def test_an_input_that_is_not_the_nchw_image_the_engine_feeds_is_refused(onnx_model, tmp_path, dims, with_meta,
                                                                          message):
    """Before, an NHWC input was converted as 32 channels of 32x3 (and its metadata rewritten
    to match), and a rank-2 input silently got the metadata's NCHW shape."""
    model = _onnx_with_input(tmp_path / "nhwc.onnx", dims, meta_from=onnx_model if with_meta else None)
    for device in ("ascend", "cpu"):
        with pytest.raises(ConvertError, match=message):
            convert_to_lite(model, device=device, batch_sizes=[8], config_only=device == "ascend")
    assert not any(p.suffix == ".ini" for p in tmp_path.iterdir())


def test_an_onnx_file_with_two_inputs_or_none_is_refused(onnx_model, tmp_path):
    two = _onnx_with_input(tmp_path / "two.onnx", ["N", 3, 32, 32], meta_from=onnx_model, extra_inputs=["scale"])
    with pytest.raises(ConvertError, match=r"two\.onnx has 2 inputs; ibnedge converts models with one NCHW"):
        convert_to_lite(two, device="ascend", batch_sizes=[8], config_only=True)
    empty = tmp_path / "none.onnx"
    empty.write_bytes(b"\x3a\x00")  # a ModelProto whose graph is empty
    assert graph_inputs(empty) == []
    with pytest.raises(ConvertError, match=r"none\.onnx has 0 inputs"):
        convert_to_lite(empty, device="ascend", batch_sizes=[8], config_only=True)


@pytest.mark.parametrize("kw", [
    {"device": "ascend", "batch_sizes": [8], "config_only": True},
    {"batch_sizes": [1, 8]},
])
def test_an_output_sharing_the_inputs_metadata_file_is_refused(onnx_model, kw):
    """``-o net.mindir`` beside ``net.onnx``: both are described by net.json. Before, the
    conversion rewrote it with the converted model's batch and deployment, so the ONNX model
    claimed to be a batch-8 Ascend model."""
    before = metadata_path(onnx_model).read_text()
    with pytest.raises(ConvertError, match=r"share the metadata file .*net\.json.*pass an --output with another "
                                           r"name \(the default is net_lite\.mindir\)"):
        convert_to_lite(onnx_model, onnx_model.with_suffix(".mindir"), **kw)
    assert metadata_path(onnx_model).read_text() == before
    assert sorted(p.name for p in onnx_model.parent.iterdir()) == ["net.json", "net.onnx"]


@needs_lite
def test_a_dynamic_conversion_does_not_inherit_a_deployment_from_its_input(onnx_model, tmp_path):
    """The input's metadata may record a deployment (an ONNX file whose JSON was copied from a
    converted model): it describes that model, not the dynamic one converted now. Before, it
    was copied along, and the Lite backend padded every call to the stale batch 8."""
    from ibnedge.backends import create_backend

    meta = json.loads(metadata_path(onnx_model).read_text())
    meta["deployment"] = {"device": "cpu", "batch_profiles": [8], "precision": "fp32"}
    metadata_path(onnx_model).write_text(json.dumps(meta))
    out = convert_to_lite(onnx_model)
    assert load_for_model(out).deployment is None
    assert create_backend("lite", out).batch_sizes is None
