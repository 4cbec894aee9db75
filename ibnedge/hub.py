"""The default model's weights: the official IBN-Net release, downloaded once and verified.

Cache layout under :func:`cache_dir` (``$IBNEDGE_HOME``, default ``~/.cache/ibnedge``)::

    weights/resnet50_ibn_a-d9d0bb7b.pth       the official PyTorch weights, sha256-verified
    models/<weights stem>-<key>/              what ibnedge.models makes of weights (ONNX, Lite...)

The weights come from :data:`DEFAULT_WEIGHTS_URL` (the authors' release of
:data:`DEFAULT_ARCH`) or from ``$IBNEDGE_WEIGHTS_URL`` (:data:`WEIGHTS_URL_ENV`): a mirror
for boxes that cannot reach the release, e.g. ``http://models.local/resnet50_ibn_a-d9d0bb7b.pth``.
Either way the file name must carry the sha256 prefix of its content (``name-<hex>.pth``),
which is verified, and the architecture is read from the weights themselves.

Nothing half-made ever sits under its final name: downloads go to a temporary file in the
same directory, are checked (length, then sha256 against the hex prefix in the file name)
and renamed only when complete. What a backend then loads is made by :mod:`ibnedge.models`.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Optional, Union

from . import architectures
from .errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_ARCH = "resnet50_ibn_a"
DEFAULT_WEIGHTS_URL = architectures.get(DEFAULT_ARCH).weights_url
WEIGHTS_URL_ENV = "IBNEDGE_WEIGHTS_URL"

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_CHUNK = 1 << 16


class DownloadError(UserError, RuntimeError):
    """The file could not be fetched or failed verification; nothing was cached."""


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
    try:
        expected = hash_prefix(name)
    except DownloadError:  # say which URL: it may come from $IBNEDGE_WEIGHTS_URL
        raise DownloadError("%s: its file name %r carries no sha256 prefix (name-<hex>.ext), so the download "
                            "cannot be verified" % (url, name)) from None
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
            except (urllib.error.URLError, socket.timeout, OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: no scheme (a mirror written as models.local/x.pth or a bare path)
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


def default_weights_url() -> str:
    """``$IBNEDGE_WEIGHTS_URL`` when set, else the official release of :data:`DEFAULT_ARCH`."""
    return os.environ.get(WEIGHTS_URL_ENV, "").strip() or DEFAULT_WEIGHTS_URL


def default_weights(progress: Optional[bool] = None) -> Path:
    """The verified local copy of the default weights (downloaded once); raises
    :class:`DownloadError` naming the URL, with nothing cached, when that fails."""
    return download(default_weights_url(), progress=progress)
