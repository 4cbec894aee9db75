"""The MindSpore Lite converter configuration an Ascend chip needs, as data.

``ibnedge convert MODEL.onnx --to lite --device ascend`` writes it beside the model
(``<output>.ascend.ini`` plus ``<output>.mixlist.json``) and passes it to the converter,
so the same files let a user re-run the vendor's ``converter_lite`` on the box. What
goes in, and why (the sources are cited next to each key in the written file too):

* ``[ascend_context] input_shape`` / ``dynamic_dims``: the 310 runs static shapes only
  ("Dynamic shape is not supported on this chip"). One batch size: a static
  ``input_shape`` (and ``--inputShape`` on the command line, where Lite 2.4+ reads a static
  shape); several: ``-1`` for the batch and the sizes as ``dynamic_dims`` profiles (at most
  100, each 1..2048; at run time only a listed size may be fed).
* ``precision_mode``: the converter defaults to ``enforce_fp16``; InstanceNorm written as
  reductions overflows float16 (this project measured a max error of 3.96, the output
  collapsing to beta). ``mixed`` (the default) is ``preferred_optimal``, which Lite passes
  to CANN as ``allow_mix_precision``: operators on CANN's trust list (Conv2D, BatchNorm)
  drop to float16, those on its block list stay float32; ``ge.exec.modify_mixlist`` adds
  :data:`FP32_OPS` (InstanceNorm's ops and the head) to the block list. Lite's converter
  honours ``precision_mode`` in ``[ascend_context]`` (2.0+) and the mixed-precision list
  only through ``[acl_build_options] ge.exec.modify_mixlist`` (documented from 2.2; an
  older converter ignores the section and keeps its built-in lists).
* the SoC (``[acl_init_options] ge.socVersion``): a model converted for one chip fails on
  another.
* ``output_type=FP32``: logits leave the chip in float32 (softmax runs on the host).
* AIPP off: no ``insert_op_config_file_path``; the native engine feeds normalised float32
  NCHW tensors (AIPP would want uint8 NHWC input).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

# Where the keys are documented.
LITE_ASCEND_DOC = "https://www.mindspore.cn/lite/docs/en/r2.2/use/cloud_infer/converter_tool_ascend.html"
LITE_ASCEND_DOC_STATIC = "https://www.mindspore.cn/lite/docs/en/r2.4.0/mindir/converter_tool_ascend.html"
LITE_PRECISION_DOC = "https://www.mindspore.cn/lite/api/en/r2.0/mindspore_lite/mindspore_lite.Context.html"
CANN_MIXLIST_DOC = "https://www.hiascend.com/document/detail/en/canncommercial/800/devaids/atc/atlasatcparam_16_0071.html"
# Lite's config reader: whole-line '#' comments, one '=' per line (tools/common/parse_config_utils.cc).
LITE_CONFIG_PARSER = "https://gitee.com/mindspore/mindspore/blob/r2.0/mindspore/lite/tools/common/parse_config_utils.cc"


@dataclass(frozen=True)
class Soc:
    """One ``--soc`` choice: the name CANN's compiler takes for it (ATC ``--soc_version``,
    ``ge.socVersion``) and the chip names ``npu-smi info`` prints for it (a regular
    expression). A chip of the same number with another letter (310B: Atlas 200I A2; 910B)
    is another SoC, which a model converted for this one does not run on."""

    cann_name: str
    npu_smi_names: str


SOCS = OrderedDict([
    ("Ascend310", Soc("Ascend310", r"310")),  # Atlas 200 / 300I / 500 (the 300I card carries 4 chips)
    ("Ascend310P", Soc("Ascend310P3", r"310P\d*")),  # Atlas 300I Pro / Duo ("Atlas inference series")
    ("Ascend910", Soc("Ascend910", r"910A?")),  # training series
])  # type: Dict[str, Soc]
DEFAULT_SOC = "Ascend310"

# --precision choice -> (Lite [ascend_context] precision_mode, whether FP32_OPS are kept in
# float32 through the mixed-precision list). Lite maps enforce_fp32/preferred_fp32/
# enforce_fp16/preferred_optimal to CANN force_fp32/allow_fp32_to_fp16/force_fp16/
# allow_mix_precision (LITE_PRECISION_DOC, "ascend properties").
PRECISIONS = OrderedDict([
    ("mixed", ("preferred_optimal", True)),  # fp16 convolutions and BatchNorm, FP32_OPS in fp32
    ("fp32", ("preferred_fp32", False)),  # fp32 wherever an operator has it (the 310's cube has no fp32)
    ("fp16", ("enforce_fp16", False)),  # the converter's default: InstanceNorm overflows
])  # type: Dict[str, Tuple[str, bool]]
DEFAULT_PRECISION = "mixed"

# Ascend IR operator types kept in float32 under "mixed": InstanceNorm (fused, or as the
# reductions this project's export writes: ReduceMean, Sub, Mul, Div, Sqrt) and the head
# (global mean pool = ReduceMean, Gemm = MatMulV2 / FullyConnection). A superset on purpose:
# which names the converted graph really holds only a device can tell (README, "Ascend").
FP32_OPS = (
    "InstanceNorm", "INInferV2", "ReduceMean", "ReduceMeanD", "Sub", "Mul", "RealDiv", "Div", "Sqrt", "Rsqrt",
    "Square", "SquaredDifference", "Pow", "MatMul", "MatMulV2", "FullyConnection",
)

MAX_PROFILES = 100  # dynamic_dims: "Support up to 100 profiles" (LITE_ASCEND_DOC, Dynamic Batch Size)
MAX_BATCH = 2048  # "The value limit of each profile: [1~2048]"


def soc_of_chip(chip_name: str) -> str:
    """The ``--soc`` choice of a chip ``npu-smi`` names ("310P3" -> "Ascend310P"), or ""."""
    return next((choice for choice, soc in SOCS.items() if re.fullmatch(soc.npu_smi_names, chip_name)), "")


class AscendConfigError(ValueError):
    """The settings cannot describe a model the converter accepts; the message says why."""


def check_batch_sizes(sizes: Sequence[int], device: str) -> Tuple[int, ...]:
    """Sorted distinct batch sizes; on Ascend within the converter's profile limits."""
    ordered = tuple(sorted(set(int(b) for b in sizes)))
    if not ordered or ordered[0] < 1:
        raise AscendConfigError("--batch needs positive sizes, got %r" % (list(sizes),))
    if device == "ascend":
        if len(ordered) > MAX_PROFILES:
            raise AscendConfigError("the Ascend converter takes at most %d batch profiles, got %d" % (MAX_PROFILES, len(ordered)))
        if ordered[-1] > MAX_BATCH:
            raise AscendConfigError("Ascend batch profiles go up to %d, got %d" % (MAX_BATCH, ordered[-1]))
    return ordered


@dataclass(frozen=True)
class AscendSettings:
    """Everything the configuration says about one conversion."""

    input_name: str
    chw: Tuple[int, int, int]
    batch_sizes: Tuple[int, ...]
    soc: str = DEFAULT_SOC
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        if self.soc not in SOCS:
            raise AscendConfigError("unknown --soc %r: choose one of %s" % (self.soc, ", ".join(SOCS)))
        if self.precision not in PRECISIONS:
            raise AscendConfigError("unknown --precision %r: choose one of %s" % (self.precision, ", ".join(PRECISIONS)))
        object.__setattr__(self, "batch_sizes", check_batch_sizes(self.batch_sizes, "ascend"))
        if not self.input_name or any(c in self.input_name for c in ":;=[],\n"):
            raise AscendConfigError(
                "the model's input name %r cannot be written into the converter's input_shape: rename the "
                "input when exporting" % self.input_name
            )

    @property
    def static(self) -> bool:
        return len(self.batch_sizes) == 1

    def input_dims(self) -> List[int]:
        return [self.batch_sizes[0] if self.static else -1] + list(self.chw)

    def command_line_shape(self) -> str:
        """``--inputShape`` for a static model (Lite 2.4+ reads the static shape only there)."""
        return "%s:%s" % (self.input_name, ",".join(str(d) for d in self.input_dims()))

    def config_text(self, mixlist_file: str, finish_command: str) -> str:
        """The ``converter_lite --configFile`` contents; ``mixlist_file`` as written in it."""
        mode, keep_fp32 = PRECISIONS[self.precision]
        lines = [
            "# MindSpore Lite converter settings for %s, written by ibnedge convert. Re-run on the box:" % self.soc,
            "#   %s" % finish_command,
            "# Comments are whole lines starting with '#', one '=' per line: %s" % LITE_CONFIG_PARSER,
            "[ascend_context]",
            "# Keys of this section: %s (Table 1)" % LITE_ASCEND_DOC,
            "input_format=NCHW",
        ]
        if self.static:
            lines += [
                "# One batch size: a static shape (Lite 2.4+ reads it from --inputShape, see the command above):",
                "# %s" % LITE_ASCEND_DOC_STATIC,
                "input_shape=%s:[%s]" % (self.input_name, ",".join(str(d) for d in self.input_dims())),
            ]
        else:
            lines += [
                "# Batch profiles: -1 marks the batch; at most %d profiles of 1..%d, and at run time only a" % (MAX_PROFILES, MAX_BATCH),
                "# listed size may be fed (%s, Dynamic Batch Size)" % LITE_ASCEND_DOC,
                "input_shape=%s:[%s]" % (self.input_name, ",".join(str(d) for d in self.input_dims())),
                "dynamic_dims=%s" % ",".join("[%d]" % b for b in self.batch_sizes),
            ]
        lines += [
            "# %s: Lite passes it to CANN as %s (%s, ascend properties)" % (mode, _CANN_MODES[mode], LITE_PRECISION_DOC),
            "precision_mode=%s" % mode,
            "# Logits leave the chip in float32; softmax runs on the host",
            "output_type=FP32",
            "# AIPP off: no insert_op_config_file_path (the engine feeds normalised float32 NCHW tensors)",
            "[acl_init_options]",
            "# The chip the model is compiled for (%s, Table 2)" % LITE_ASCEND_DOC,
            "ge.socVersion=%s" % SOCS[self.soc].cann_name,
        ]
        if keep_fp32:
            lines += [
                "[acl_build_options]",
                "# Operators kept in float32 under allow_mix_precision: CANN --modify_mixlist, %s;" % CANN_MIXLIST_DOC,
                "# the key: %s (Table 3). A path relative to the folder the converter runs in." % LITE_ASCEND_DOC,
                "ge.exec.modify_mixlist=%s" % mixlist_file,
            ]
        return "\n".join(lines) + "\n"

    def mixlist(self) -> Dict[str, Dict[str, List[str]]]:
        """CANN's mixed-precision list change: :data:`FP32_OPS` onto the block list."""
        return {"black-list": {"to-add": list(FP32_OPS)}}


_CANN_MODES = {
    "enforce_fp32": "force_fp32",
    "preferred_fp32": "allow_fp32_to_fp16",
    "enforce_fp16": "force_fp16",
    "enforce_origin": "must_keep_origin_dtype",
    "preferred_optimal": "allow_mix_precision",
}


@dataclass(frozen=True)
class AscendFiles:
    """The configuration files written beside the output model, and the command to finish."""

    config: Path
    mixlist: Path
    command: List[str]
    folder: Path

    def shell_command(self) -> str:
        """One line to paste on the box: ``cd FOLDER && converter_lite ...``."""
        return "cd %s && %s" % (shlex.quote(str(self.folder)), " ".join(shlex.quote(a) for a in self.command))


def write_ascend_files(settings: AscendSettings, model: PathLike, fmk: str, output: PathLike) -> AscendFiles:
    """Write ``<output stem>.ascend.ini`` (and the mixed-precision list) beside ``output``.

    Paths inside are relative to the output's folder, where the command runs, so the
    folder can be copied to the box as it is (with the model beside it).
    """
    output = Path(output)
    folder = output.parent.resolve()
    config = output.with_name(output.stem + ".ascend.ini")
    mixlist = output.with_name(output.stem + ".mixlist.json")
    model_arg = os.path.relpath(str(Path(model).resolve()), str(folder))
    command = [
        "converter_lite",
        "--fmk=%s" % fmk,
        "--modelFile=%s" % model_arg,
        "--outputFile=%s" % output.stem,  # the converter appends .mindir
        "--saveType=MINDIR",
        "--optimize=ascend_oriented",
        "--configFile=%s" % config.name,
    ]
    if settings.static:
        command.append("--inputShape=%s" % settings.command_line_shape())
    files = AscendFiles(config=config, mixlist=mixlist, command=command, folder=folder)
    _write_atomically(mixlist, json.dumps(settings.mixlist(), indent=2) + "\n")
    _write_atomically(config, settings.config_text(mixlist.name, files.shell_command()))
    return files


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    tmp.write_text(text, encoding="utf-8")
    os.replace(str(tmp), str(path))


__all__ = [
    "AscendConfigError",
    "AscendFiles",
    "AscendSettings",
    "DEFAULT_PRECISION",
    "DEFAULT_SOC",
    "FP32_OPS",
    "MAX_BATCH",
    "MAX_PROFILES",
    "PRECISIONS",
    "SOCS",
    "Soc",
    "check_batch_sizes",
    "soc_of_chip",
    "write_ascend_files",
]
