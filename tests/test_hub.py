"""The weights download against a real HTTP server on loopback (no internet in tests)."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_helpers import have
from ibnedge import hub
from ibnedge.metadata import load_for_model
from ibnedge.results import read_rows

PAYLOAD = np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]
GOOD_NAME = "weights-%s.pth" % PREFIX
WRONG_NAME = "weights-%s.pth" % ("0" * 8 if PREFIX != "0" * 8 else "1" * 8)


class _Handler(http.server.BaseHTTPRequestHandler):
    requests = []  # type: list

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path.startswith("/good/") or self.path.startswith("/wrong/"):
            body = PAYLOAD
        elif self.path.startswith("/truncated/"):
            # Promise the whole file, send 40 % of it, hang up: a dropped connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) * 2 // 5])
            self.wfile.flush()
            self.close_connection = True
            return
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def _serving(handler):
    """A real HTTP server on a free loopback port, in a thread; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server():
    with _serving(_Handler) as url:
        yield url


def _closed_port_url(name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return "http://127.0.0.1:%d/%s" % (port, name)


def test_download_verifies_and_caches(server, tmp_path):
    _Handler.requests.clear()
    stream = io.StringIO()
    path = hub.download(server + "/good/" + GOOD_NAME, tmp_path, progress=True, stream=stream)
    assert path == tmp_path / GOOD_NAME
    assert path.read_bytes() == PAYLOAD
    assert "KiB" in stream.getvalue()  # the progress bar was drawn
    assert sorted(os.listdir(str(tmp_path))) == [GOOD_NAME]  # no temporary file left behind
    # Second call: served from the cache, no request.
    assert hub.download(server + "/good/" + GOOD_NAME, tmp_path, progress=False) == path
    assert len(_Handler.requests) == 1


def test_truncated_download_is_refused(server, tmp_path):
    with pytest.raises(hub.DownloadError, match="truncated|broke off"):
        hub.download(server + "/truncated/" + GOOD_NAME, tmp_path, progress=False)
    assert os.listdir(str(tmp_path)) == []


def test_wrong_hash_is_refused(server, tmp_path):
    with pytest.raises(hub.DownloadError, match="failed verification"):
        hub.download(server + "/wrong/" + WRONG_NAME, tmp_path, progress=False)
    assert os.listdir(str(tmp_path)) == []


def test_http_error_and_offline(server, tmp_path):
    with pytest.raises(hub.DownloadError, match="404"):
        hub.download(server + "/missing/" + GOOD_NAME, tmp_path, progress=False)
    with pytest.raises(hub.DownloadError, match="cannot download"):
        hub.download(_closed_port_url(GOOD_NAME), tmp_path, progress=False)
    assert os.listdir(str(tmp_path)) == []


def test_name_without_hash_is_refused(server, tmp_path):
    with pytest.raises(hub.DownloadError, match="no sha256 prefix"):
        hub.download(server + "/good/weights.pth", tmp_path, progress=False)


def test_hash_prefix():
    assert hub.hash_prefix("resnet50_ibn_a-d9d0bb7b.pth") == "d9d0bb7b"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://127.0.0.1:9/weights.pth"])
def test_a_url_without_a_hash_is_refused_naming_the_url(url, tmp_path):
    """A mirror given in $IBNEDGE_WEIGHTS_URL that ends in "/" or names a file without its
    sha256 prefix: the message names the URL (it named an empty file name), nothing is fetched."""
    with pytest.raises(hub.DownloadError) as info:
        hub.download(url, dest_dir=tmp_path)
    assert str(info.value).startswith(url + ": its file name ") and "sha256 prefix" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_url_without_a_scheme_is_refused_naming_the_url(tmp_path):
    url = "models.local/resnet50_ibn_a-d9d0bb7b.pth"  # $IBNEDGE_WEIGHTS_URL without http://
    with pytest.raises(hub.DownloadError) as info:
        hub.download(url, dest_dir=tmp_path)
    assert str(info.value).startswith("cannot download %s (" % url) and "url type" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("IBNEDGE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "ibnedge"


def test_default_model_offline_says_pass_model(monkeypatch, tmp_path):
    from ibnedge.models import ModelUnavailable, resolve

    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path))
    monkeypatch.setenv(hub.WEIGHTS_URL_ENV, _closed_port_url("resnet50_ibn_a-d9d0bb7b.pth"))
    with pytest.raises(ModelUnavailable, match="--model"):
        resolve(None, progress=False)
    assert not (tmp_path / "weights" / "resnet50_ibn_a-d9d0bb7b.pth").exists()
    assert not (tmp_path / "models").exists()


def test_weights_url_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(hub.WEIGHTS_URL_ENV, raising=False)
    assert hub.default_weights_url() == hub.DEFAULT_WEIGHTS_URL
    assert hub.DEFAULT_WEIGHTS_URL.endswith("/resnet50_ibn_a-d9d0bb7b.pth")
    monkeypatch.setenv(hub.WEIGHTS_URL_ENV, "http://127.0.0.1:9/mirror/resnet50_ibn_a-d9d0bb7b.pth")
    assert hub.default_weights_url() == "http://127.0.0.1:9/mirror/resnet50_ibn_a-d9d0bb7b.pth"


class _OneFile(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` at any path; ``hits`` lists the paths asked for."""

    body = b""
    hits = []  # type: list

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def weights_server():
    """A real HTTP server on loopback serving one file (``_OneFile.body``)."""
    _OneFile.hits = []
    with _serving(_OneFile) as url:
        yield url


def test_default_model_flow_end_to_end_over_loopback(weights_server, tmp_path, imagenet_files):
    """``ibnedge infer photos/`` without --model, in a child process of this interpreter (the
    Python 3.7 box has only ibnedge, onnx and Lite): the weights are downloaded once from
    $IBNEDGE_WEIGHTS_URL, sha256-verified, built into ONNX (ibnedge.onnx_builder), made into
    the model of the first backend that can run it, cached, and reused by the second run.
    The classes agree with ONNX Runtime on the graph built from the same file."""
    pytest.importorskip("onnx")
    from edge_helpers import run_py
    from pth_writer import random_state_dict, save_pth

    arch = "resnet_ibn_a_tiny"
    raw = save_pth(random_state_dict(arch, seed=11), tmp_path / "raw.pth")
    _OneFile.body = raw.read_bytes()
    name = "%s-%s.pth" % (arch, hashlib.sha256(_OneFile.body).hexdigest()[:8])
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in imagenet_files[:4]:
        (photos / f.name).write_bytes(f.read_bytes())
    home = tmp_path / "home"
    env = {"IBNEDGE_HOME": str(home), hub.WEIGHTS_URL_ENV: "%s/mirror/%s" % (weights_server, name)}

    runs = []
    for i in range(2):
        out = tmp_path / ("run%d.jsonl" % i)
        proc = run_py(Path(sys.executable), ["-m", "ibnedge", "infer", str(photos), "--output", str(out),
                                             "--topk", "5"], env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        runs.append(read_rows(out))
    assert _OneFile.hits == ["/mirror/" + name]  # downloaded once, reused after
    assert (home / "weights" / name).read_bytes() == _OneFile.body
    assert runs[0] == runs[1] and len(runs[0]) == 4 and all(len(r["top"]) == 5 for r in runs[0])

    entries = list((home / "models").glob(name[:-4] + "-*"))
    assert len(entries) == 1, entries
    made = [f for f in entries[0].iterdir() if f.suffix in (".onnx", ".mindir")]
    assert made, list(entries[0].iterdir())
    for model in made:
        meta = load_for_model(model)
        assert (meta.arch, meta.origin, meta.preprocess.semantics) == (arch, "official", "pil"), model
    if have("onnxruntime"):
        from ibnedge.classifier import Classifier
        from ibnedge.onnx_builder import build_from_pth

        built = tmp_path / "reference.onnx"
        build_from_pth(home / "weights" / name, built)
        reference = Classifier(model=built, backend="onnx").predict(sorted(photos.iterdir()), topk=5)
        by_file = dict((Path(r["path"]).name, [t["index"] for t in r["top"]]) for r in runs[0])
        assert by_file == dict((Path(p.source).name, p.indices) for p in reference)


def test_a_cache_shared_with_another_environment_gives_a_model_for_a_runtime_installed_here(monkeypatch, tmp_path):
    """The 3.7 box environment and the 3.11 one may share $IBNEDGE_HOME: a model another one
    made (here: a file in its place, for each runtime not installed here) is not handed to
    a backend this interpreter cannot load; auto makes one that it can."""
    pytest.importorskip("onnx")
    from ibnedge.backends import BACKENDS
    from ibnedge.models import entry_dir, resolve
    from pth_writer import random_state_dict, save_pth

    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path / "home"))
    weights = save_pth(random_state_dict("resnet_ibn_a_tiny", seed=5), tmp_path / "tiny-0a1b2c3d.pth")
    absent = [name for name, cls in BACKENDS.items() if not cls.installed()]
    if not absent:
        pytest.skip("every runtime is installed here")
    entry = entry_dir(weights)
    entry.mkdir(parents=True)
    planted = {"lite": "_lite.mindir", "mindspore": "_mindspore.mindir", "onnx": ".onnx"}
    for name in absent:
        (entry / (weights.stem + planted[name])).write_bytes(b"made elsewhere")
    resolved = resolve(weights, progress=False)
    assert resolved.backend not in absent and BACKENDS[resolved.backend].installed(), resolved
    assert resolved.path.read_bytes() != b"made elsewhere"
