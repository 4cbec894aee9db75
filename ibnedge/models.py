"""What ``--model`` names, made into the file a backend loads: once, before a backend is chosen.

Backends only load model files (``.mindir``, ``.onnx``, ``.ms``). :func:`resolve` turns the
rest into one, and caches it:

- official PyTorch weights (``.pth``; the architecture is read from the keys, or ``--arch``):
  built into ONNX by :mod:`ibnedge.onnx_builder` (neither PyTorch nor MindSpore), which the
  ``onnx`` backend runs and ``ibnedge convert`` makes into a Lite model; the ``mindspore``
  backend gets a MINDIR exported by ``train.export``;
- MindSpore checkpoints (``.ckpt``): exported by ``python -m train.export`` (ONNX, or MINDIR
  for the ``mindspore`` backend), which needs MindSpore and this project's ``train/``;
- no model at all: the default weights (:mod:`ibnedge.hub`: downloaded once, sha256-checked),
  then as a ``.pth``.

On a box with only ibnedge, ``onnx`` and MindSpore Lite, ``.pth`` files and the default
model therefore work; a ``.ckpt`` is refused with what to do instead.

Cache: ``$IBNEDGE_HOME/models/<weights stem>-<key>/`` (see :func:`entry_dir`), keyed by the
weights file's absolute path, size and modification time (and ``--arch``), holding
``<stem>.onnx``, ``<stem>_lite.mindir`` and ``<stem>_mindspore.mindir``, each with its
metadata JSON. Each is made in a staging folder beside them and moved into place metadata
first, model last, so a model file that is there is a complete one.

``train.export`` runs as a child process of the interpreter running ibnedge, from the source
checkout this ibnedge belongs to (``train/`` beside the ``ibnedge`` package, as the checkout
has it; a wheel ships ibnedge alone), with that checkout as its working directory and first
on its path: a ``train.py`` or ``train/`` in the user's directory cannot stand in for it.
ibnedge itself never imports ``train``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from .backends import AUTO_ORDER, get_backend_class
from .choices import AUTO
from .errors import UserError, one_line
from .hub import DownloadError, cache_dir, default_weights
from .metadata import metadata_path

PathLike = Union[str, "os.PathLike[str]"]

# Weights, by suffix: official PyTorch state dicts, and MindSpore checkpoints.
OFFICIAL_SUFFIXES = (".pth", ".pt")
CHECKPOINT_SUFFIXES = (".ckpt",)

# The file made for each backend, by the weights' stem.
_MADE_FOR = {
    "lite": "%s_lite.mindir",
    "onnx": "%s.onnx",
    "mindspore": "%s_mindspore.mindir",
}


class ModelUnavailable(UserError, RuntimeError):
    """No model file can be made here from what ``--model`` names; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """The file to load and the backend to load it with (``auto`` for a model file given
    as it is; the backend it was made for otherwise)."""

    path: Path
    backend: str


def is_weights(path: PathLike) -> bool:
    """Whether ``path`` holds weights to be made into a model (``.pth``, ``.ckpt``)."""
    return Path(path).suffix.lower() in OFFICIAL_SUFFIXES + CHECKPOINT_SUFFIXES


def resolve(model: Optional[PathLike], backend: str = AUTO, arch: Optional[str] = None,
            progress: Optional[bool] = None) -> ResolvedModel:
    """The model file for ``backend`` (a name or ``auto``): ``model`` itself when a backend
    reads it, else made from the weights it names (None: the default weights), once.

    Raises :class:`ModelUnavailable` with one line naming the fix when nothing can be made.
    """
    if backend != AUTO:
        get_backend_class(backend)  # an unknown name lists the valid ones
    if model is not None and not is_weights(model):
        return ResolvedModel(Path(model), backend)
    return made_from(weights_file(model, progress), backend, arch, progress)


def weights_file(model: Optional[PathLike], progress: Optional[bool] = None) -> Path:
    """The weights file ``model`` names, or for None the default weights (downloaded once)."""
    if model is None:
        try:
            return default_weights(progress=progress)
        except DownloadError as exc:
            raise ModelUnavailable(
                "%s; without network access pass --model PATH to a model file (.mindir, .onnx) or weights (.pth)" % exc
            )
    weights = Path(model)
    if not weights.is_file():
        raise ModelUnavailable("model file not found: %s (check the --model path)" % weights)
    return weights


def made_from(weights: Path, backend: str = AUTO, arch: Optional[str] = None,
              progress: Optional[bool] = None) -> ResolvedModel:
    """The model made of ``weights`` for ``backend`` (``auto``: the first in AUTO_ORDER that
    can be made here), made now unless the cache has it. Official weights are read and
    checked once, whatever the number of backends tried: a file that cannot be read, whose
    architecture cannot be told or that does not fit ``arch`` fails the same for every
    backend (PthError, UnknownArchitecture, OnnxBuildError naming it)."""
    entry = entry_dir(weights, arch)
    wanted = list(AUTO_ORDER) if backend == AUTO else [backend]
    for name in wanted:  # made before (here, or by another environment sharing the cache)
        made = entry / (_MADE_FOR[name] % weights.stem)
        if made.is_file() and (backend != AUTO or get_backend_class(name).installed()):
            return ResolvedModel(made, name)
    official = _OfficialWeights(weights, arch)
    backends_by_reason = OrderedDict()  # type: Dict[str, List[str]]
    for name in wanted:
        why_not = unavailable_because(name, weights)
        if why_not is None:
            official.read()
            try:
                return ResolvedModel(_make(name, weights, arch, entry, progress, official), name)
            except UserError as exc:  # the weights do not fit, the converter fails...
                if backend != AUTO:
                    raise
                why_not = one_line(exc)
        if backend != AUTO:
            raise ModelUnavailable("cannot make %s into a model for the %s backend: %s" % (weights, name, why_not))
        backends_by_reason.setdefault(why_not, []).append(name)
    reasons = ["%s: %s" % (", ".join(names), why_not) for why_not, names in backends_by_reason.items()]
    raise ModelUnavailable("cannot make %s into a model any installed backend runs (%s)" % (weights, "; ".join(reasons)))


class _OfficialWeights(object):
    """The tensors and architecture of official ``.pth`` weights, read and checked by the
    first backend that makes a model of them and kept for the next (nothing for a
    ``.ckpt``). The mindspore backend's train.export reads the file again in its own process."""

    def __init__(self, weights: Path, arch: Optional[str]) -> None:
        self.weights = weights
        self.arch = arch
        self.state_dict = None  # type: Optional[Mapping[str, Any]]

    def read(self) -> None:
        if self.state_dict is not None or self.weights.suffix.lower() not in OFFICIAL_SUFFIXES:
            return
        from .architectures import infer_arch
        from .onnx_builder import check_fits
        from .pth_reader import load_state_dict

        state_dict = load_state_dict(self.weights)
        self.arch = self.arch or infer_arch(state_dict, source=str(self.weights))
        check_fits(self.arch, state_dict, str(self.weights))
        self.state_dict = state_dict


def unavailable_because(backend: str, weights: PathLike) -> Optional[str]:
    """Why no model for ``backend`` can be made from ``weights`` here, or None when one can."""
    cls = get_backend_class(backend)
    if not cls.installed():
        return "%s is not installed (%s)" % (cls.runtime_module, cls.install_hint)
    from_checkpoint = Path(weights).suffix.lower() in CHECKPOINT_SUFFIXES
    if backend == "mindspore" or from_checkpoint:
        problem = _train_export_problem()
        if problem is not None:
            what = ("%s is a MindSpore checkpoint: exporting it" % Path(weights).name if from_checkpoint
                    else "the mindspore backend runs MINDIR exported by train.export, which")
            return "%s needs %s; export it where MindSpore is (python -m train.export --checkpoint %s --format ONNX) " \
                   "and pass the .onnx file%s" % (what, problem, Path(weights).name,
                                                  "" if from_checkpoint else ", or use --backend lite or onnx")
    elif importlib.util.find_spec("onnx") is None:
        return "building the ONNX graph of %s needs the onnx package: pip install onnx" % Path(weights).name
    if backend == "lite":
        from .convert import converter_available

        if converter_available() is None:
            return "no MindSpore Lite converter (this mindspore_lite has none, and converter_lite is not on PATH)"
    return None


def entry_dir(weights: PathLike, arch: Optional[str] = None) -> Path:
    """``$IBNEDGE_HOME/models/<stem>-<key>``: the key hashes the weights' absolute path, size,
    modification time and ``arch``, so a replaced or edited file gets a new entry."""
    weights = Path(weights)
    st = weights.stat()
    key = hashlib.sha256(
        ("%s|%d|%d|%s" % (weights.resolve(), st.st_size, st.st_mtime_ns, arch or "")).encode("utf-8")
    ).hexdigest()[:12]
    return cache_dir() / "models" / ("%s-%s" % (weights.stem, key))


def _make(backend: str, weights: Path, arch: Optional[str], entry: Path, progress: Optional[bool],
          official: _OfficialWeights) -> Path:
    dest = entry / (_MADE_FOR[backend] % weights.stem)
    if _says(progress):
        sys.stderr.write("ibnedge: making %s into a %s model (once; cached in %s)\n" % (weights, backend, entry))
        sys.stderr.flush()
    if backend == "mindspore":
        return _staged(dest, lambda out: _train_export(weights, arch, "MINDIR", out))
    onnx = _onnx_of(weights, arch, entry / (_MADE_FOR["onnx"] % weights.stem), official)
    if backend == "onnx":
        return onnx
    from .convert import convert_to_lite

    return _staged(dest, lambda out: convert_to_lite(onnx, out))


def _onnx_of(weights: Path, arch: Optional[str], dest: Path, official: _OfficialWeights) -> Path:
    if dest.is_file():
        return dest
    if official.state_dict is None:  # a MindSpore checkpoint
        return _staged(dest, lambda out: _train_export(weights, arch, "ONNX", out))
    from .onnx_builder import build_from_state_dict

    return _staged(dest, lambda out: build_from_state_dict(official.state_dict, weights, out, arch=official.arch))


def _staged(dest: Path, make) -> Path:
    """``make(path)`` writes a model (and its metadata beside it) into a fresh staging folder
    beside ``dest``; both are then moved to ``dest``, the metadata first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".making-", dir=str(dest.parent)))
    try:
        made = staging / dest.name
        make(made)
        if not made.is_file():
            raise ModelUnavailable("making %s wrote no file" % dest)
        if metadata_path(made).is_file():
            os.replace(str(metadata_path(made)), str(metadata_path(dest)))
        os.replace(str(made), str(dest))
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    return dest


def _says(progress: Optional[bool]) -> bool:
    return bool(progress) if progress is not None else sys.stderr.isatty()


# --------------------------------------------------------------------------- train.export


def train_checkout() -> Optional[Path]:
    """The source checkout this ibnedge belongs to, when it has ``train/`` (the folder above
    the ``ibnedge`` package holding ``pyproject.toml`` and ``train/export.py``), else None:
    an installed wheel has no ``train/`` beside it."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "train" / "export.py").is_file():
        return root
    return None


def _train_export_problem() -> Optional[str]:
    """What running ``python -m train.export`` here lacks, or None."""
    if importlib.util.find_spec("mindspore") is None:
        return "MindSpore (Python 3.9+: pip install mindspore), which is not installed here"
    if train_checkout() is None:
        return ("this project's train/ package, which this installation of ibnedge does not have (a wheel ships "
                "ibnedge alone; train/ runs from the source checkout)")
    return None


def _train_export(weights: Path, arch: Optional[str], fmt: str, output: Path) -> None:
    """``python -m train.export`` in a child process, from this ibnedge's source checkout (also
    keeping MindSpore's context settings out of this process's backends)."""
    root = train_checkout()
    if root is None:
        raise ModelUnavailable("exporting %s needs %s" % (weights, _train_export_problem()))
    cmd = [sys.executable, "-m", "train.export", "--checkpoint", str(weights.resolve()), "--format", fmt,
           "--output", str(output.resolve()), "--export-batch", "0"]  # type: List[str]
    if arch:
        cmd += ["--arch", arch]
    env = dict(os.environ)  # type: Dict[str, str]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    env.setdefault("GLOG_v", "3")
    proc = subprocess.run(cmd, cwd=str(root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0 or not output.is_file():
        lines = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip().splitlines()
        reason = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        raise ModelUnavailable("cannot export %s with train.export (%s)" % (weights, reason.replace("error: ", "", 1)))


__all__ = ["CHECKPOINT_SUFFIXES", "ModelUnavailable", "OFFICIAL_SUFFIXES", "ResolvedModel", "entry_dir", "is_weights",
           "made_from", "resolve", "train_checkout", "unavailable_because", "weights_file"]
