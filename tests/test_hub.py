"""The weights download against a real HTTP server on loopback (no internet in tests)."""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import threading

import numpy as np
import pytest

from ibnedge import hub

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


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


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


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("IBNEDGE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "ibnedge"


def test_default_model_offline_says_pass_model(monkeypatch, tmp_path):
    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "DEFAULT_WEIGHTS_URL", _closed_port_url("resnet50_ibn_a-d9d0bb7b.pth"))
    with pytest.raises(hub.ModelUnavailable, match="--model"):
        hub.default_model("auto", progress=False)
    assert not (tmp_path / "weights" / "resnet50_ibn_a-d9d0bb7b.pth").exists()
    assert not list((tmp_path / "models").glob("**/*.onnx")) if (tmp_path / "models").exists() else True


def _torch_pth(tmp_path, arch):
    """A real PyTorch checkpoint of the reference ``arch`` (random weights, real statistics)."""
    torch = pytest.importorskip("torch")
    import torch_reference

    model = torch_reference.build(arch, num_classes=1000)
    raw = tmp_path / "raw.pth"
    torch.save(model.state_dict(), str(raw))
    data = raw.read_bytes()
    return model, data, hashlib.sha256(data).hexdigest()[:8]


def test_default_model_downloads_converts_exports_once(monkeypatch, tmp_path, imagenet_files):
    """The whole first-use flow on loopback: download, verify, convert the .pth (train.convert),
    export (train.export) once, reuse; logits equal to the PyTorch model's."""
    pytest.importorskip("mindspore")
    pytest.importorskip("train.checkpoint")
    arch = "resnet_ibn_a_tiny"
    model, data, prefix = _torch_pth(tmp_path, arch)
    name = "%s-%s.pth" % (arch, prefix)

    class Serve(http.server.BaseHTTPRequestHandler):
        hits = []

        def log_message(self, *args):
            pass

        def do_GET(self):
            type(self).hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(hub, "DEFAULT_ARCH", arch)
        monkeypatch.setattr(hub, "DEFAULT_WEIGHTS_URL", "http://127.0.0.1:%d/%s" % (httpd.server_address[1], name))
        path = hub.default_model("mindspore", progress=False)
        assert path == tmp_path / "home" / "models" / name[:-4] / (arch + ".mindir")
        assert (tmp_path / "home" / "weights" / name).read_bytes() == data
        assert hub.default_model("mindspore", progress=False) == path  # reused
        assert len(Serve.hits) == 1

        from ibnedge.classifier import Classifier

        clf = Classifier(model=None, backend="mindspore", batch=2)
        assert clf.model_path == path and clf.spec.semantics == "pil"
        tensor = clf.preprocessor.run([str(f) for f in imagenet_files[:2]]).tensor
        import torch

        with torch.no_grad():
            expected = model(torch.from_numpy(tensor)).numpy()
        got = clf.logits(tensor)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))
        preds = clf.predict(imagenet_files[:2], topk=3)
        assert [p.indices[0] for p in preds] == [int(i) for i in expected.argmax(axis=1)]
    finally:
        httpd.shutdown()
        httpd.server_close()
