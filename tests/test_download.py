"""weights.download over real HTTP from a local server (127.0.0.1 only, no outside network): a server that accepts
and never answers ends in a clear error within the (shortened) timeout; a download cut in the middle resumes
with a Range request; a server that ignores Range makes it start over cleanly."""
import hashlib
import http.server
import socket
import threading
import time

import pytest

import clip
import weights

DATA = bytes(range(256)) * 1024  # 256 KiB, several reads of the downloader
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def silent_server():
    """A socket that listens and never accepts: connecting succeeds (the kernel queues it), no byte ever comes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/{SHA}/ViT-B-16.pt"


def test_a_server_that_never_answers_fails_within_the_timeout(silent_server, tmp_path, capsys):
    start = time.time()
    with pytest.raises(clip.CLIPError) as e:
        weights.download(silent_server, str(tmp_path), timeout=1)
    assert time.time() - start < 10
    message = str(e.value)
    assert silent_server in message and f"put the file at {tmp_path / 'ViT-B-16.pt'}" in message
    assert "no answer for 1 s" in message and "\n" not in message
    assert silent_server in capsys.readouterr().err  # said before waiting, not after


def test_the_timeout_comes_from_the_environment(silent_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MSTA_DOWNLOAD_TIMEOUT", "0.5")
    start = time.time()
    with pytest.raises(clip.CLIPError, match="no answer for 0.5 s"):
        weights.download(silent_server, str(tmp_path))
    assert time.time() - start < 10


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves DATA; the first request is cut after half the bytes; honours Range unless the server says not."""

    def do_GET(self):
        self.server.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range") and self.server.ranges:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(DATA) - start))
        self.end_headers()
        body = DATA[start:]
        if len(self.server.requests) == 1:
            body = body[:len(DATA) // 2]  # then the connection closes: a cut download
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(params=[True, False], ids=["resumes", "restarts"])
def server(request):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.ranges = [], request.param
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/{SHA}/ViT-B-16.pt"
    httpd.shutdown()
    httpd.server_close()


def test_a_cut_download_resumes_or_restarts(server, tmp_path):
    httpd, url = server
    with pytest.raises(clip.CLIPError, match="put the file at"):
        weights.download(url, str(tmp_path), timeout=5)
    part = tmp_path / "ViT-B-16.pt.part"
    assert part.read_bytes() == DATA[:len(DATA) // 2] and not (tmp_path / "ViT-B-16.pt").exists()
    assert weights.download(url, str(tmp_path), timeout=5) == str(tmp_path / "ViT-B-16.pt")
    assert (tmp_path / "ViT-B-16.pt").read_bytes() == DATA and not part.exists()
    assert httpd.requests == [None, f"bytes={len(DATA) // 2}-"]  # the second request asked for the rest only
