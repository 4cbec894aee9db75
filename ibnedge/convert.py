"""``ibnedge convert``: ONNX or MINDIR in, a MindSpore Lite MINDIR out, metadata carried along.

Wraps MindSpore Lite's converter: its Python API (``mindspore_lite.Converter``) when
importable, else the ``converter_lite`` binary on PATH. Lite 2.0 (the one on PyPI) cannot
read a MINDIR written by MindSpore 2.10, so the portable route is ONNX
(``python -m train.export --format onnx``) -> ``ibnedge convert`` -> Lite MINDIR.

Static shapes (``batch_sizes``): the Ascend 310 has no dynamic shapes, so ``--device
ascend`` writes the chip's converter configuration (:mod:`ibnedge.ascend_config`: a static
shape or batch profiles, the precision, the SoC) beside the output and converts with it;
without the Ascend toolkit here it stops after writing the configuration and raises
:class:`FinishOnBox` carrying the exact ``converter_lite`` command to run on the box. On
CPU, where Lite ignores Ascend batch profiles, each batch size becomes a static model of
its own: the largest at the output path, the others beside it (``<stem>.b<N>.mindir``),
all listed in the output's metadata (``deployment``), which the Lite backend reads.

The outputs appear atomically: the converter writes a temporary file in the destination
directory which is renamed into place only after the conversion succeeded.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .ascend_config import DEFAULT_PRECISION, DEFAULT_SOC, PRECISIONS, AscendConfigError, AscendFiles, AscendSettings
from .ascend_config import check_batch_sizes, write_ascend_files
from .backends.base import captured_native_stderr, native_reason
from .choices import CONVERT_DEVICES, FP16_WEIGHTS, FP32, OPTIMIZE_LEVELS
from .errors import UserError
from .metadata import Deployment, ModelMetadata, load_for_model, metadata_path, save_for_model, warn_missing

PathLike = Union[str, "os.PathLike[str]"]

_FMK_BY_SUFFIX = {".onnx": "ONNX", ".mindir": "MINDIR"}


class ConvertError(UserError, RuntimeError):
    """The model could not be converted; the message names the file and the fix."""


class FinishOnBox(ConvertError):
    """The Ascend configuration is written, the conversion itself must run where the Ascend
    toolkit is; ``files.shell_command()`` is the line to run there."""

    def __init__(self, message: str, files: AscendFiles) -> None:
        super().__init__(message)
        self.files = files


def default_output(model: PathLike) -> Path:
    """``net.onnx`` -> ``net_lite.mindir`` (never the input's own name: MindSpore's ``net.mindir``
    and Lite's must be able to sit side by side)."""
    model = Path(model)
    return model.with_name(model.stem + "_lite.mindir")


def profile_output(output: PathLike, batch: int) -> Path:
    """The file of one extra batch profile on CPU: ``net_lite.mindir`` -> ``net_lite.b1.mindir``."""
    output = Path(output)
    return output.with_name("%s.b%d%s" % (output.stem, batch, output.suffix))


def converter_available() -> Optional[str]:
    """"python" (the Lite Python API), "binary" (converter_lite on PATH), or None."""
    try:
        import mindspore_lite  # noqa: F401

        if hasattr(mindspore_lite, "Converter"):
            return "python"
    except ImportError:
        pass
    return "binary" if shutil.which("converter_lite") else None


def convert_to_lite(
    model: PathLike,
    output: Optional[PathLike] = None,
    optimize: Optional[str] = None,
    fp16: bool = False,
    device: str = "cpu",
    batch_sizes: Optional[Sequence[int]] = None,
    soc: Optional[str] = None,
    precision: Optional[str] = None,
    config_only: bool = False,
) -> Path:
    """Convert ``model`` (.onnx or .mindir) to a Lite MINDIR; returns the written path.

    ``optimize``: "general" (fused for CPU/GPU; the default), "ascend_oriented" (Ascend,
    implied by ``device="ascend"``) or "none" (portable, fused at load time). ``fp16``
    stores float32 weights as float16 (CPU). ``batch_sizes``: static batch sizes (needed
    for Ascend). ``soc`` / ``precision``: the Ascend chip and what runs in float32 (see
    :mod:`ibnedge.ascend_config`). ``config_only``: write the Ascend configuration and
    raise :class:`FinishOnBox` without converting. ``model``'s metadata (embedded in an
    ONNX file, or the JSON beside it) is written beside the output, with the deployment
    recorded: a Lite MINDIR has no room for it inside.
    """
    model = Path(model)
    fmk, device, optimize = _checked_options(model, optimize, fp16, device, soc, precision, config_only)
    output = Path(output) if output is not None else default_output(model)
    if output.suffix.lower() != ".mindir":
        raise ConvertError("the Lite output must be a .mindir file, got %s" % output)
    if output.resolve() == model.resolve():
        raise ConvertError("refusing to overwrite the input %s: pass another --output" % model)
    if (batch_sizes or device == "ascend") and metadata_path(output).resolve() == metadata_path(model).resolve():
        raise ConvertError(
            "%s and %s share the metadata file %s, which would then describe the converted model instead of %s: "
            "pass an --output with another name (the default is %s)"
            % (model, output, metadata_path(model), model.name, default_output(model).name)
        )
    meta = load_for_model(model)  # read (and validate) before spending time converting
    if meta is None:
        warn_missing(model, "the Lite model gets none either, and ibnedge infer will run it on ImageNet defaults")
    output.parent.mkdir(parents=True, exist_ok=True)

    if device == "ascend":
        return _convert_ascend(model, fmk, output, meta, batch_sizes, soc or DEFAULT_SOC,
                               precision or DEFAULT_PRECISION, config_only)
    if not batch_sizes:
        _run_converter(model, fmk, output, optimize, fp16)
        if meta is not None and metadata_path(output) != metadata_path(model):
            # A dynamic model: whatever deployment the input's metadata records is not the output's.
            save_for_model(dataclasses.replace(meta, deployment=None), output)
        return output
    return _convert_static_cpu(model, fmk, output, meta, optimize, fp16, batch_sizes)


def _checked_options(model: Path, optimize: Optional[str], fp16: bool, device: str, soc: Optional[str],
                     precision: Optional[str], config_only: bool) -> Tuple[str, str, str]:
    """(the converter's --fmk, the device, the --optimize level) once the options agree."""
    if not model.is_file():
        raise ConvertError("model file not found: %s" % model)
    fmk = _FMK_BY_SUFFIX.get(model.suffix.lower())
    if fmk is None:
        raise ConvertError(
            "cannot convert %s: give an .onnx or .mindir file (export one with python -m train.export)" % model
        )
    if optimize == "ascend_oriented":
        device = "ascend"
    if device not in CONVERT_DEVICES:
        raise ConvertError("unknown --device %r for convert: choose one of %s" % (device, ", ".join(CONVERT_DEVICES)))
    optimize = optimize or ("ascend_oriented" if device == "ascend" else "general")
    if optimize not in OPTIMIZE_LEVELS:
        raise ConvertError("unknown --optimize %r: choose one of %s" % (optimize, ", ".join(OPTIMIZE_LEVELS)))
    if device == "ascend" and optimize != "ascend_oriented":
        raise ConvertError("--device ascend converts with --optimize ascend_oriented, not %s" % optimize)
    if device != "ascend" and (soc or precision or config_only):
        raise ConvertError("--soc, --precision and --config-only are for --device ascend")
    if device == "ascend" and fp16:
        raise ConvertError("--fp16 is for CPU models; on Ascend choose --precision (%s)" % ", ".join(PRECISIONS))
    return fmk, device, optimize


def _convert_static_cpu(model: Path, fmk: str, output: Path, meta: Optional[ModelMetadata], optimize: str,
                        fp16: bool, batch_sizes: Sequence[int]) -> Path:
    """One static model per batch size: the largest at ``output``, the others beside it."""
    sizes = _checked(lambda: check_batch_sizes(batch_sizes, "cpu"))
    name, chw = _model_input(model, fmk, meta)
    _require_metadata(meta, model, sizes)
    files = {}  # type: Dict[int, str]
    for size in sizes:
        dest = output if size == sizes[-1] else profile_output(output, size)
        _run_converter(model, fmk, dest, optimize, fp16, input_shape={name: [size] + list(chw)})
        if dest != output:
            files[size] = dest.name
    deployment = Deployment(device="cpu", batch_profiles=sizes, precision=FP16_WEIGHTS if fp16 else FP32,
                            profile_files=files)
    _save_deployment(meta, output, chw, deployment)
    return output


def _convert_ascend(model: Path, fmk: str, output: Path, meta: Optional[ModelMetadata],
                    batch_sizes: Optional[Sequence[int]], soc: str, precision: str, config_only: bool) -> Path:
    if not batch_sizes:
        raise ConvertError(
            "--device ascend needs --batch: the Ascend 310 runs static shapes only (e.g. --batch 8, or profiles "
            "--batch 1,8,32)"
        )
    name, chw = _model_input(model, fmk, meta)
    settings = _checked(lambda: AscendSettings(name, chw, tuple(batch_sizes), soc=soc, precision=precision))
    _require_metadata(meta, model, settings.batch_sizes)
    files = write_ascend_files(settings, model, fmk, output)
    deployment = Deployment(device="ascend", soc=soc, batch_profiles=settings.batch_sizes, precision=precision)
    # The metadata goes beside the output now, so that a model finished on the box has it.
    _save_deployment(meta, output, chw, deployment)
    if config_only:
        raise FinishOnBox("wrote %s (--config-only); convert on the Ascend box with: %s"
                          % (files.config, files.shell_command()), files)
    from .ascend_box import probe_toolkit

    box = probe_toolkit()
    if box.toolkit is None or box.atc is None:
        why = ("the Ascend toolkit at %s has no model compiler (atc)" % box.toolkit if box.toolkit is not None
               else "no Ascend toolkit here (%s)" % (box.toolkit_problem or "ASCEND_HOME_PATH is not set"))
        raise FinishOnBox("wrote %s; %s: finish on the Ascend box with: %s" % (files.config, why, files.shell_command()),
                          files)
    # In this process the converter resolves relative paths against the current folder, so
    # it gets a copy of the configuration naming the mixed-precision list by absolute path.
    running = files.config.with_name(".%s.%d.run.ini" % (files.config.stem, os.getpid()))
    try:
        running.write_text(settings.config_text(str(files.mixlist.resolve()), files.shell_command()), encoding="utf-8")
        shape = {name: settings.input_dims()} if settings.static else None
        _run_converter(model, fmk, output, "ascend_oriented", False, input_shape=shape, config=running, ascend=True)
    finally:
        if running.exists():
            running.unlink()
    return output


def _checked(make):
    try:
        return make()
    except AscendConfigError as exc:
        raise ConvertError(str(exc))


def _model_input(model: Path, fmk: str, meta: Optional[ModelMetadata]) -> Tuple[str, Tuple[int, int, int]]:
    """The input's name and (C, H, W): the converter's input_shape needs both. The file's
    fixed dims must agree with the metadata, which fills the ones the file leaves unknown:
    the metadata's shape is what the engine will feed."""
    if fmk != "ONNX":
        raise ConvertError(
            "static batch sizes need the model's input name, read from an ONNX file: export %s as ONNX "
            "(python -m train.export --format onnx) and convert that" % model.name
        )
    from .onnx_info import OnnxFormatError, graph_inputs

    try:
        inputs = graph_inputs(model)
    except OnnxFormatError as exc:
        raise ConvertError(str(exc))
    if len(inputs) != 1:
        raise ConvertError("%s has %d inputs; ibnedge converts models with one NCHW image input" % (model, len(inputs)))
    name, dims = inputs[0]
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
    wanted = list(meta.input_shape[1:]) if meta is not None else fixed
    if len(dims) != 4 or any(f is not None and f != w for f, w in zip(fixed, wanted)):
        said = " but its metadata (%s) says %s" % (metadata_path(model).name, list(meta.input_shape)) if meta else ""
        raise ConvertError("%s's input %s has shape %s%s; ibnedge feeds NCHW images: export the model and its "
                           "metadata again" % (model, name, dims, said))
    if wanted[0] != 3 or not all(isinstance(d, int) and d > 0 for d in wanted[1:]):
        raise ConvertError("%s's input %s has shape %s: static batch sizes need C = 3 (RGB, what the engine feeds) "
                           "and a fixed H and W (or metadata beside the model that gives them)" % (model, name, dims))
    return name, (int(wanted[0]), int(wanted[1]), int(wanted[2]))


def _require_metadata(meta: Optional[ModelMetadata], model: Path, sizes: Sequence[int]) -> None:
    if meta is None and len(sizes) > 1:
        raise ConvertError(
            "several batch sizes are recorded in the model's metadata, and %s has none (embedded or beside it): "
            "export the model with python -m train.export (it writes %s), or convert one --batch size"
            % (model, metadata_path(model).name)
        )


def _save_deployment(meta: Optional[ModelMetadata], output: Path, chw: Tuple[int, int, int],
                     deployment: Deployment) -> None:
    if meta is None:
        return
    sizes = deployment.batch_profiles
    batch = sizes[0] if len(sizes) == 1 else -1
    save_for_model(dataclasses.replace(meta, input_shape=(batch,) + tuple(chw), deployment=deployment), output)


def _run_converter(model: Path, fmk: str, dest: Path, optimize: str, fp16: bool,
                   input_shape: Optional[Dict[str, List[int]]] = None, config: Optional[Path] = None,
                   ascend: bool = False) -> None:
    """One conversion into ``dest`` through a temporary file renamed into place."""
    how = converter_available()
    if how is None:
        raise ConvertError(
            "no MindSpore Lite converter: pip install mindspore-lite (Python 3.7 on PyPI) or put converter_lite on PATH"
        )
    # The converter appends ".mindir" to whatever base name it is given.
    tmp_base = dest.with_name(".%s.%d.tmp" % (dest.stem, os.getpid()))
    tmp_file = Path(str(tmp_base) + ".mindir")
    try:
        if how == "python":
            _convert_python(model, fmk, tmp_base, optimize, fp16, input_shape, config, ascend)
        else:
            _convert_binary(model, fmk, tmp_base, optimize, fp16, input_shape, config)
        if not tmp_file.is_file():
            raise ConvertError("the converter reported success but wrote no %s" % tmp_file)
        # The converter creates its output mode 0400; give it ordinary permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(str(tmp_file), 0o666 & ~umask)
        os.replace(str(tmp_file), str(dest))
    finally:
        if tmp_file.exists():
            tmp_file.unlink()


def _mindir_hint(model: Path, fmk: str) -> str:
    if fmk == "MINDIR":
        return (
            "; this Lite cannot read MINDIR written by a newer MindSpore: export ONNX instead "
            "(python -m train.export --format onnx) and convert that"
        )
    return ""


def _convert_python(model: Path, fmk: str, tmp_base: Path, optimize: str, fp16: bool,
                    input_shape: Optional[Dict[str, List[int]]], config: Optional[Path], ascend: bool) -> None:
    os.environ.setdefault("GLOG_v", "3")  # keep Lite's graph-pass warnings off the terminal
    import mindspore_lite as mslite

    converter = mslite.Converter()
    converter.optimize = optimize
    converter.weight_fp16 = bool(fp16)
    if hasattr(mslite.ModelType, "MINDIR"):
        converter.save_type = mslite.ModelType.MINDIR
    if input_shape:
        converter.input_shape = input_shape
    if ascend and hasattr(converter, "device"):  # 2.0: "Ascend" makes the model run on the Ascend backend
        converter.device = "Ascend"
    try:
        with captured_native_stderr(also_stdout=True) as log:
            if config is not None:
                converter.convert(getattr(mslite.FmkType, fmk), str(model), str(tmp_base), config_file=str(config))
            else:
                converter.convert(getattr(mslite.FmkType, fmk), str(model), str(tmp_base))
    except RuntimeError as exc:
        reason = native_reason(exc, log)
        raise ConvertError("MindSpore Lite could not convert %s: %s%s" % (model, reason, _mindir_hint(model, fmk)))


def _convert_binary(model: Path, fmk: str, tmp_base: Path, optimize: str, fp16: bool,
                    input_shape: Optional[Dict[str, List[int]]], config: Optional[Path]) -> None:
    cmd = [
        "converter_lite",
        "--fmk=%s" % fmk,
        "--modelFile=%s" % model,
        "--outputFile=%s" % tmp_base,
        "--saveType=MINDIR",
        "--optimize=%s" % optimize,
    ]  # type: List[str]
    if fp16:
        cmd.append("--fp16=on")
    for name, dims in (input_shape or {}).items():
        cmd.append("--inputShape=%s:%s" % (name, ",".join(str(d) for d in dims)))
    if config is not None:
        cmd.append("--configFile=%s" % config)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        reason = native_reason(RuntimeError("Common error code"), lines)
        if reason == "Common error code":
            reason = lines[-1] if lines else "exit status %d" % proc.returncode
        raise ConvertError("converter_lite could not convert %s: %s%s" % (model, reason, _mindir_hint(model, fmk)))


__all__ = [
    "ConvertError",
    "FinishOnBox",
    "convert_to_lite",
    "converter_available",
    "default_output",
    "profile_output",
]
