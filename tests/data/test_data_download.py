"""download() against a real HTTP server on 127.0.0.1 serving small files."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sgdtemp.data import REMOTE_DATASETS, RemoteDataset, RemoteFile, download, load_dataset
from sgdtemp.errors import UserError


@dataclass
class Loopback:
    """What the server serves and what it was asked for."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_short: set[str] = field(default_factory=set)  # send half the body, then hang up
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server(monkeypatch) -> Iterator[Loopback]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = Loopback()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests.append(name)
            body = state.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if name in state.cut_short:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _spec(name: str, data: bytes) -> RemoteFile:
    return RemoteFile(name, len(data), hashlib.sha256(data).hexdigest())


def _registry(*files: RemoteFile, mirrors: tuple[str, ...] = ("http://0.0.0.0:9/",)) -> dict:
    return {"tiny": RemoteDataset(mirrors=mirrors, files=files)}


PAYLOAD = bytes(range(256)) * 300  # 76.8 kB, several reads


def test_good_download(tmp_path: Path, server: Loopback) -> None:
    server.files["a.bin"] = PAYLOAD
    folder = download(
        "tiny", root=tmp_path, base_url=server.url, registry=_registry(_spec("a.bin", PAYLOAD))
    )
    assert folder == tmp_path / "tiny"
    assert (folder / "a.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin"]  # no temporary file left


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, server: Loopback) -> None:
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    server.files["a.bin"] = bytes(corrupted)
    with pytest.raises(UserError, match="failed its checksum"):
        download(
            "tiny", root=tmp_path, base_url=server.url, registry=_registry(_spec("a.bin", PAYLOAD))
        )
    assert list(tmp_path.iterdir()) == []  # not even the folder this call created
    (tmp_path / "tiny").mkdir()  # a folder that was there before stays
    with pytest.raises(UserError, match="failed its checksum"):
        download(
            "tiny", root=tmp_path, base_url=server.url, registry=_registry(_spec("a.bin", PAYLOAD))
        )
    assert list((tmp_path / "tiny").iterdir()) == []


def test_interrupted_download_leaves_nothing(tmp_path: Path, server: Loopback) -> None:
    server.files["a.bin"] = PAYLOAD
    server.cut_short.add("a.bin")
    with pytest.raises(UserError, match=f"stopped after {len(PAYLOAD) // 2} of {len(PAYLOAD)}"):
        download(
            "tiny",
            root=tmp_path / "cache",
            base_url=server.url,
            registry=_registry(_spec("a.bin", PAYLOAD)),
        )
    assert list(tmp_path.iterdir()) == []  # no file, no folder


def test_cached_file_is_not_downloaded_again(tmp_path: Path, server: Loopback) -> None:
    server.files["a.bin"] = PAYLOAD
    registry = _registry(_spec("a.bin", PAYLOAD))
    download("tiny", root=tmp_path, base_url=server.url, registry=registry)
    assert server.requests == ["a.bin"]
    download("tiny", root=tmp_path, base_url=server.url, registry=registry)
    assert server.requests == ["a.bin"]


def test_wrong_cached_file_is_replaced(tmp_path: Path, server: Loopback) -> None:
    server.files["a.bin"] = PAYLOAD
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.bin").write_bytes(PAYLOAD[:-1] + b"?")
    download(
        "tiny", root=tmp_path, base_url=server.url, registry=_registry(_spec("a.bin", PAYLOAD))
    )
    assert (tmp_path / "tiny" / "a.bin").read_bytes() == PAYLOAD


def test_failed_download_keeps_a_good_cached_sibling(tmp_path: Path, server: Loopback) -> None:
    other = b"second file"
    server.files["a.bin"] = PAYLOAD  # "b.bin" is missing on the server: 404
    registry = _registry(_spec("a.bin", PAYLOAD), _spec("b.bin", other))
    with pytest.raises(UserError, match="could not download b.bin"):
        download("tiny", root=tmp_path, base_url=server.url, registry=registry)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["a.bin"]


def test_next_mirror_is_tried(tmp_path: Path, server: Loopback) -> None:
    server.files["good/a.bin"] = PAYLOAD
    registry = _registry(
        _spec("a.bin", PAYLOAD), mirrors=(server.url + "bad/", server.url + "good/")
    )
    download("tiny", root=tmp_path, registry=registry)
    assert server.requests == ["bad/a.bin", "good/a.bin"]
    assert (tmp_path / "tiny" / "a.bin").read_bytes() == PAYLOAD


def test_unreachable_server_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    dead = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused
    with pytest.raises(UserError, match="could not download a.bin"):
        download("tiny", root=tmp_path, base_url=dead, registry=_registry(_spec("a.bin", PAYLOAD)))


def test_default_root_is_sgdtemp_data(tmp_path: Path, server: Loopback, monkeypatch) -> None:
    monkeypatch.setenv("SGDTEMP_DATA", str(tmp_path / "cache"))
    server.files["a.bin"] = PAYLOAD
    folder = download("tiny", base_url=server.url, registry=_registry(_spec("a.bin", PAYLOAD)))
    assert folder == tmp_path / "cache" / "tiny"


def test_unknown_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar10, fashion-mnist, mnist"):
        download("imagenet", root=tmp_path)


def test_downloaded_mnist_loads(tmp_path: Path, server: Loopback, idx_encoder) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    blobs = {name: gzip.compress(idx_encoder(array)) for name, array in arrays.items()}
    server.files.update(blobs)
    registry = {"mnist": RemoteDataset((server.url,), tuple(_spec(n, b) for n, b in blobs.items()))}
    download("mnist", root=tmp_path, registry=registry)
    splits = load_dataset("mnist", root=tmp_path, heldout=5)
    np.testing.assert_array_equal(splits.test.y.numpy(), np.arange(10))


def test_official_registry_is_well_formed() -> None:
    assert set(REMOTE_DATASETS) == {"fashion-mnist", "mnist", "cifar10"}
    for remote in REMOTE_DATASETS.values():
        assert remote.mirrors and all(m.endswith("/") for m in remote.mirrors)
        for spec in remote.files:
            assert spec.size > 0 and len(spec.sha256) == 64
            int(spec.sha256, 16)


def test_cache_root_falls_back_to_xdg_then_home(tmp_path: Path, monkeypatch) -> None:
    from sgdtemp.data import cache_root

    monkeypatch.delenv("SGDTEMP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "sgdtemp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "sgdtemp"
