"""The default model: official IBN-Net weights, downloaded once, converted and exported once.

Cache layout under :func:`cache_dir` (``$IBNEDGE_HOME``, default ``~/.cache/ibnedge``)::

    weights/resnet50_ibn_a-d9d0bb7b.pth         the official PyTorch weights, sha256-verified
    models/resnet50_ibn_a-d9d0bb7b/
        resnet50_ibn_a.mindir + .json           MindSpore export (backend "mindspore")
        resnet50_ibn_a.onnx   + .json           ONNX export (backend "onnx"; input of the Lite converter)
        resnet50_ibn_a_lite.mindir              Lite MINDIR (backend "lite"; metadata shared)
    exports/<stem>-<key>/                       on-the-fly exports of user checkpoints (--arch)

Nothing half-made ever sits under its final name: downloads go to a temporary file in
the same directory, are checked (length, then sha256 against the hex prefix in the file
name) and renamed only when complete; exports are written to a temporary directory and
renamed into place, metadata first, model last, so a present model file is a complete one.

Converting the ``.pth`` needs ``train`` (MindSpore, Python 3.9+), run as a child process
(``python -m train.export``); ibnedge never imports it. In an
environment with only MindSpore Lite (Python 3.7), the default model is usable once a
MindSpore environment sharing the same ``IBNEDGE_HOME`` has exported the ONNX file.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Optional, Union

from .errors import UserError
from .metadata import metadata_path

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_ARCH = "resnet50_ibn_a"
DEFAULT_WEIGHTS_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"
# torchvision/PIL preprocessing: how the official weights were evaluated.
DEFAULT_SEMANTICS = "pil"

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_CHUNK = 1 << 16


class DownloadError(UserError, RuntimeError):
    """The file could not be fetched or failed verification; nothing was cached."""


class ModelUnavailable(UserError, RuntimeError):
    """The default model cannot be made here; the message says what to do (usually --model)."""


def cache_dir() -> Path:
    """``$IBNEDGE_HOME``, else ``$XDG_CACHE_HOME/ibnedge``, else ``~/.cache/ibnedge``."""
    home = os.environ.get("IBNEDGE_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ibnedge"


def hash_prefix(file_name: str) -> str:
    """The hex sha256 prefix a release file name carries: ``x-d9d0bb7b.pth`` -> ``d9d0bb7b``."""
    match = _HASH_IN_NAME.search(file_name)
    if not match:
        raise DownloadError("%s carries no sha256 prefix (name-<hex>.ext), so it cannot be verified" % file_name)
    return match.group(1)


def download(
    url: str,
    dest_dir: Optional[PathLike] = None,
    progress: Optional[bool] = None,
    timeout: float = 30.0,
    stream: Optional[IO[str]] = None,
) -> Path:
    """The verified local copy of ``url`` (downloaded into ``dest_dir`` if not there yet).

    ``progress``: draw a bar on stderr (default: when stderr is a terminal). Raises
    :class:`DownloadError` for network failures, short bodies and hash mismatches; no
    file is left under the final name in any of those cases.
    """
    from .results import Progress  # the same bar as ibnedge infer's

    name = os.path.basename(urllib.parse.urlparse(url).path)
    expected = hash_prefix(name)
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "weights"
    target = dest_dir / name
    if target.is_file():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    stream = stream if stream is not None else sys.stderr

    fd, tmp_name = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=str(dest_dir))
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise DownloadError("cannot download %s (HTTP %d %s)" % (url, exc.code, exc.reason))
            except (urllib.error.URLError, socket.timeout, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError("cannot download %s (%s)" % (url, reason))
            with response:
                length_header = response.headers.get("Content-Length")
                length = int(length_header) if length_header and length_header.isdigit() else None
                bar = Progress(stream, enabled=progress, unit="KiB")
                bar.total = (length + 1023) // 1024 if length else None
                if bar.enabled:
                    stream.write("downloading %s to %s\n" % (url, target))
                try:
                    while True:
                        block = response.read(_CHUNK)
                        if not block:
                            break
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(received // 1024 - bar.done)
                except (http.client.IncompleteRead, socket.timeout, OSError, http.client.HTTPException) as exc:
                    raise DownloadError("download of %s broke off after %d bytes (%s)" % (url, received, exc))
                finally:
                    bar.close()
        if length is not None and received != length:
            raise DownloadError("download of %s is truncated: %d of %d bytes" % (url, received, length))
        actual = digest.hexdigest()
        if not actual.startswith(expected):
            raise DownloadError(
                "%s failed verification: sha256 %s... does not start with %s (corrupt or tampered download)"
                % (name, actual[:16], expected)
            )
        os.replace(tmp_name, str(target))
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _model_dir(weights_name: str) -> Path:
    return cache_dir() / "models" / Path(weights_name).stem


def default_model(backend: str = "auto", progress: Optional[bool] = None) -> Path:
    """The default model's file for ``backend``, making it (download/convert/export) once.

    Raises :class:`ModelUnavailable` with one line saying to pass ``--model`` when the
    weights cannot be fetched or this environment cannot convert them.
    """
    from .backends import AUTO_ORDER, get_backend_class

    weights_name = os.path.basename(urllib.parse.urlparse(DEFAULT_WEIGHTS_URL).path)
    model_dir = _model_dir(weights_name)
    files = {
        "mindspore": model_dir / (DEFAULT_ARCH + ".mindir"),
        "onnx": model_dir / (DEFAULT_ARCH + ".onnx"),
        "lite": model_dir / (DEFAULT_ARCH + "_lite.mindir"),
    }
    wanted = [backend] if backend != "auto" else [b for b in AUTO_ORDER if get_backend_class(b).installed()]
    if not wanted:
        raise ModelUnavailable("no inference runtime is installed: pip install mindspore-lite, mindspore or onnxruntime")
    for name in wanted:
        if files[name].is_file():
            return files[name]

    have_mindspore = _train_root() is not None
    reasons = []
    for name in wanted:
        if name == "lite":
            from .convert import ConvertError, converter_available, convert_to_lite

            if converter_available() is None:
                reasons.append("lite: no MindSpore Lite converter")
                continue
            if not files["onnx"].is_file():
                if not have_mindspore:
                    reasons.append("lite: the ONNX export needs MindSpore")
                    continue
                _export_default(files["onnx"], "onnx", progress)
            try:
                return convert_to_lite(files["onnx"], files["lite"])
            except ConvertError as exc:  # e.g. a Lite build without the converter's plugins
                reasons.append("lite: %s" % exc)
                continue
        if not have_mindspore:
            reasons.append("%s: converting the official weights needs MindSpore" % name)
            continue
        return _export_default(files[name], "mindir" if name == "mindspore" else "onnx", progress)
    raise ModelUnavailable(
        "the default model (official %s weights) cannot be prepared here (%s): convert it once where MindSpore "
        "(Python 3.9+) is installed with the same IBNEDGE_HOME=%s, or pass --model PATH"
        % (DEFAULT_ARCH, "; ".join(reasons), cache_dir())
    )


def _export_default(dest: Path, fmt: str, progress: Optional[bool]) -> Path:
    try:
        weights = download(DEFAULT_WEIGHTS_URL, progress=progress)
    except DownloadError as exc:
        raise ModelUnavailable(
            "%s; without network access pass --model PATH to a model file (.mindir, .onnx, or .pth/.ckpt with --arch)"
            % exc
        )
    return export_checkpoint(weights, DEFAULT_ARCH, fmt=fmt, dest=dest, semantics=DEFAULT_SEMANTICS)



def _train_root() -> Optional[Path]:
    """The folder holding this project's ``train`` package when it and MindSpore are
    importable (a real package, not a stray namespace folder), else None."""
    import importlib.util

    train = importlib.util.find_spec("train")
    if train is None or train.origin is None or importlib.util.find_spec("mindspore") is None:
        return None
    return Path(train.origin).resolve().parent.parent


def export_checkpoint(
    weights: PathLike,
    arch: str,
    fmt: str = "mindir",
    dest: Optional[PathLike] = None,
    semantics: Optional[str] = None,
) -> Path:
    """Export ``weights`` (.pth official / .ckpt MindSpore) of ``arch`` to ``fmt`` once; reuse after.

    ``dest`` defaults to a cache entry keyed by the weights file's path, size and mtime.
    Needs ``train`` and MindSpore importable; the export runs in a child process.
    """
    weights = Path(weights)
    if fmt not in ("mindir", "onnx"):
        raise ValueError("export format must be 'mindir' or 'onnx', got %r" % (fmt,))
    if dest is None:
        st = weights.stat()
        key = hashlib.sha256(
            ("%s|%d|%d|%s" % (weights.resolve(), st.st_size, st.st_mtime_ns, arch)).encode("utf-8")
        ).hexdigest()[:12]
        dest = cache_dir() / "exports" / ("%s-%s" % (weights.stem, key)) / ("%s.%s" % (arch, fmt))
    dest = Path(dest)
    if dest.is_file():
        return dest
    train_root = _train_root()
    if train_root is None:
        raise ModelUnavailable(
            "exporting %s needs MindSpore and the train package (Python 3.9+): run where they are installed, "
            "or pass an exported --model (.mindir, .onnx)" % weights
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=str(dest.parent)))
    try:
        made = staging / dest.name
        # ``python -m train.export`` owns checkpoint reading (.pth through train.convert),
        # metadata and the export itself; a child process also keeps its MindSpore context
        # settings (graph mode, device) out of this process's backend.
        cmd = [sys.executable, "-m", "train.export", "--checkpoint", str(weights), "--arch", arch,
               "--format", fmt.upper(), "--output", str(made), "--export-batch", "0"]
        if semantics:
            cmd += ["--semantics", semantics]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(train_root), env.get("PYTHONPATH")) if p)
        env.setdefault("GLOG_v", "3")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if proc.returncode != 0 or not made.is_file():
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
            raise ModelUnavailable("cannot export %s as %s (%s)" % (weights, arch, reason.replace("error: ", "", 1)))
        # Metadata first, the model last: a present model file means a complete pair.
        if metadata_path(made).is_file():
            os.replace(str(metadata_path(made)), str(metadata_path(dest)))
        os.replace(str(made), str(dest))
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    return dest
