"""Downloads against a real HTTP server on 127.0.0.1: good files arrive, broken ones leave nothing behind."""

import dataclasses
import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from idx_files import write_idx

from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.data import datasets as datasets_module
from diagnose.data.datasets import read_dataset
from diagnose.data.download import download
from diagnose.data.sources import SOURCES
from diagnose.errors import UserError
from diagnose.training.loop import train

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Fail loudly instead of reaching the internet, should a bug send a request to a real mirror."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"a test tried to connect to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"a test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; names in `server.truncated` promise more bytes than they send."""

    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        if self.path.lstrip("/") in self.server.slow:
            time.sleep(1.0)
        promised = len(body) + (1000 if self.path.lstrip("/") in self.server.truncated else 0)
        self.send_response(200)
        self.send_header("Content-Length", str(promised))
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    truncated: set[str]
    slow: set[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/"

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a slow response is expected, not a failure


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.files, httpd.truncated, httpd.slow = {}, set(), set()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on, so connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


BODY = bytes(range(256)) * 1000  # 256 kB: several chunks, so streaming is exercised


def assert_nothing_left(folder: Path) -> None:
    assert list(folder.iterdir()) == [], "a failed download left files behind"


def test_download_good_file_arrives_intact(server, tmp_path):
    server.files["f.bin"] = BODY
    dest = download([server.url + "f.bin"], tmp_path / "dl" / "f.bin", md5(BODY))
    assert dest == tmp_path / "dl" / "f.bin" and dest.read_bytes() == BODY
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temp file left next to it


def test_download_wrong_checksum_leaves_no_file(server, tmp_path):
    server.files["f.bin"] = BODY
    with pytest.raises(UserError, match="checksum mismatch"):
        download([server.url + "f.bin"], tmp_path / "f.bin", md5(b"something else"))
    assert_nothing_left(tmp_path)


def test_download_truncated_body_leaves_no_file(server, tmp_path):
    server.files["f.bin"] = BODY
    server.truncated.add("f.bin")
    # The md5 given is that of the short body, so only the length check can catch it.
    with pytest.raises(UserError, match=f"ended after {len(BODY)} of {len(BODY) + 1000} bytes"):
        download([server.url + "f.bin"], tmp_path / "f.bin", md5(BODY))
    assert_nothing_left(tmp_path)


def test_download_falls_back_to_the_next_mirror(server, tmp_path):
    server.files["second/f.bin"] = BODY
    urls = [server.url + "first/f.bin", server.url + "second/f.bin"]
    assert download(urls, tmp_path / "f.bin", md5(BODY)).read_bytes() == BODY


def test_download_every_mirror_failing_lists_each_failure(server, tmp_path):
    urls = [server.url + "first/f.bin", server.url + "second/f.bin"]
    with pytest.raises(UserError) as err:
        download(urls, tmp_path / "f.bin", md5(BODY))
    assert all(f"{url}: HTTP 404" in str(err.value) for url in urls)
    assert_nothing_left(tmp_path)


def test_download_timeout_is_a_failure(server, tmp_path):
    server.files["f.bin"] = BODY
    server.slow.add("f.bin")
    with pytest.raises(UserError, match="timed out"):
        download([server.url + "f.bin"], tmp_path / "f.bin", md5(BODY), timeout=0.2)
    assert_nothing_left(tmp_path)


# --- read_dataset through a mirror ---


@pytest.fixture
def fake_mnist(server, monkeypatch, tmp_path):
    """Small IDX files on the server, with the checksums read_dataset expects swapped to theirs."""
    arrays = {
        "train-images-idx3-ubyte.gz": np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(40, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": np.random.default_rng(1).integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(8, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_idx(tmp_path / name, array, gzip=True)
        server.files[f"mirror/{name}"] = (tmp_path / name).read_bytes()
    checksums = {name: md5(server.files[f"mirror/{name}"]) for name in arrays}
    monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], checksums=checksums))
    monkeypatch.setattr(datasets_module, "SYSTEM_DIR", tmp_path / "system")  # as if nothing were installed
    return arrays


def test_read_dataset_downloads_then_reads_locally(server, fake_mnist, tmp_path):
    root = tmp_path / "data"
    raw = read_dataset("mnist", root, mirror=server.url + "mirror")
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(fake_mnist)
    np.testing.assert_array_equal(raw.train_x[:, 0], fake_mnist["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(raw.test_y, fake_mnist["t10k-labels-idx1-ubyte.gz"])

    server.shutdown()  # a second read must not need the network
    server.server_close()
    again = read_dataset("mnist", root, mirror=server.url + "mirror")
    np.testing.assert_array_equal(again.train_x, raw.train_x)


def test_read_dataset_unreachable_mirror_says_where_to_put_files(closed_port, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "SYSTEM_DIR", tmp_path / "system")
    root = tmp_path / "data"
    with pytest.raises(UserError) as err:
        read_dataset("mnist", root, mirror=f"http://127.0.0.1:{closed_port}/")
    message = str(err.value)
    assert "refused" in message.lower() and str(root / "mnist") in message
    assert all(name in message for name in SOURCES["mnist"].checksums)
    assert not (root / "mnist").exists() or not any((root / "mnist").iterdir())


# --- the default data: no network, no dataset on disk ---


def test_the_default_data_trains_with_no_network_and_no_dataset_on_disk(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DIAGNOSE_DATA", str(empty))
    monkeypatch.setattr(datasets_module, "SYSTEM_DIR", tmp_path / "system")  # as if no dataset were installed
    with pytest.raises(AssertionError, match="tried to resolve"):  # a published dataset would have to download
        read_dataset("fashion_mnist", tmp_path / "elsewhere")
    cfg = compose_config(["steps=3", "device=cpu", "diag=off", "threads=1"])  # the default command, shorter
    metrics = train(build_run(cfg), tmp_path / "run", to_dict(cfg))
    assert metrics.status == "completed" and metrics.config["data"]["name"] == "fashion_mnist_sample"
    assert 0 <= metrics.final.test_acc <= 1 and list(empty.iterdir()) == []  # nothing fetched, nothing written
