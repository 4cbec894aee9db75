"""``ibnedge convert``: ONNX or MINDIR in, a MindSpore Lite MINDIR out, metadata carried along.

Wraps MindSpore Lite's converter: its Python API (``mindspore_lite.Converter``) when
importable, else the ``converter_lite`` binary on PATH. Lite 2.0 (the one on PyPI) cannot
read a MINDIR written by MindSpore 2.10, so the portable route is ONNX
(``python -m train.export --format onnx``) -> ``ibnedge convert`` -> Lite MINDIR.

The output appears atomically: the converter writes a temporary file in the destination
directory which is renamed into place only after the conversion succeeded.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Union

from .backends.base import captured_native_stderr, native_reason
from .metadata import load_for_model, metadata_path, save_for_model

PathLike = Union[str, "os.PathLike[str]"]

OPTIMIZE_LEVELS = ("general", "ascend_oriented", "none")
_FMK_BY_SUFFIX = {".onnx": "ONNX", ".mindir": "MINDIR"}


class ConvertError(RuntimeError):
    """The model could not be converted; the message names the file and the fix."""


def default_output(model: PathLike) -> Path:
    """``net.onnx`` -> ``net_lite.mindir`` (never the input's own name: MindSpore's ``net.mindir``
    and Lite's must be able to sit side by side)."""
    model = Path(model)
    return model.with_name(model.stem + "_lite.mindir")


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
    optimize: str = "general",
    fp16: bool = False,
) -> Path:
    """Convert ``model`` (.onnx or .mindir) to a Lite MINDIR; returns the written path.

    ``optimize``: "general" (fused for CPU/GPU), "ascend_oriented" (Ascend only) or "none"
    (portable, fused at load time). ``fp16`` stores float32 weights as float16.
    The metadata JSON beside ``model`` (if any) is copied beside the output.
    """
    model = Path(model)
    if not model.is_file():
        raise ConvertError("model file not found: %s" % model)
    fmk = _FMK_BY_SUFFIX.get(model.suffix.lower())
    if fmk is None:
        raise ConvertError(
            "cannot convert %s: give an .onnx or .mindir file (export one with python -m train.export)" % model
        )
    if optimize not in OPTIMIZE_LEVELS:
        raise ConvertError("unknown --optimize %r: choose one of %s" % (optimize, ", ".join(OPTIMIZE_LEVELS)))
    output = Path(output) if output is not None else default_output(model)
    if output.suffix.lower() != ".mindir":
        raise ConvertError("the Lite output must be a .mindir file, got %s" % output)
    if output.resolve() == model.resolve():
        raise ConvertError("refusing to overwrite the input %s: pass another --output" % model)
    meta = load_for_model(model)  # read (and validate) before spending time converting
    output.parent.mkdir(parents=True, exist_ok=True)

    how = converter_available()
    if how is None:
        raise ConvertError(
            "no MindSpore Lite converter: pip install mindspore-lite (Python 3.7 on PyPI) or put converter_lite on PATH"
        )
    # The converter appends ".mindir" to whatever base name it is given.
    tmp_base = output.with_name(".%s.%d.tmp" % (output.stem, os.getpid()))
    tmp_file = Path(str(tmp_base) + ".mindir")
    try:
        if how == "python":
            _convert_python(model, fmk, tmp_base, optimize, fp16)
        else:
            _convert_binary(model, fmk, tmp_base, optimize, fp16)
        if not tmp_file.is_file():
            raise ConvertError("the converter reported success but wrote no %s" % tmp_file)
        # The converter creates its output mode 0400; give it ordinary permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(str(tmp_file), 0o666 & ~umask)
        os.replace(str(tmp_file), str(output))
    finally:
        if tmp_file.exists():
            tmp_file.unlink()
    if meta is not None and metadata_path(output) != metadata_path(model):
        save_for_model(meta, output)
    return output


def _mindir_hint(model: Path, fmk: str) -> str:
    if fmk == "MINDIR":
        return (
            "; this Lite cannot read MINDIR written by a newer MindSpore: export ONNX instead "
            "(python -m train.export --format onnx) and convert that"
        )
    return ""


def _convert_python(model: Path, fmk: str, tmp_base: Path, optimize: str, fp16: bool) -> None:
    os.environ.setdefault("GLOG_v", "3")  # keep Lite's graph-pass warnings off the terminal
    import mindspore_lite as mslite

    converter = mslite.Converter()
    converter.optimize = optimize
    converter.weight_fp16 = bool(fp16)
    if hasattr(mslite.ModelType, "MINDIR"):
        converter.save_type = mslite.ModelType.MINDIR
    try:
        with captured_native_stderr(also_stdout=True) as log:
            converter.convert(getattr(mslite.FmkType, fmk), str(model), str(tmp_base))
    except RuntimeError as exc:
        reason = native_reason(exc, log)
        raise ConvertError("MindSpore Lite could not convert %s: %s%s" % (model, reason, _mindir_hint(model, fmk)))


def _convert_binary(model: Path, fmk: str, tmp_base: Path, optimize: str, fp16: bool) -> None:
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
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        reason = native_reason(RuntimeError("Common error code"), lines)
        if reason == "Common error code":
            reason = lines[-1] if lines else "exit status %d" % proc.returncode
        raise ConvertError("converter_lite could not convert %s: %s%s" % (model, reason, _mindir_hint(model, fmk)))


__all__ = ["ConvertError", "OPTIMIZE_LEVELS", "convert_to_lite", "converter_available", "default_output"]
