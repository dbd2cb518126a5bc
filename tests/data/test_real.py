"""Real-data loaders (issue 10) on small files the tests write, and the download path
against a loopback HTTP server: checksums, resume, truncation, offline, hostile pickles."""

import gzip
import hashlib
import http.server
import os
import pickle
import threading

import numpy as np
import pytest
from _files import cifar_tar  # tests/_files.py (conftest.py puts tests/ on sys.path)

from dl import data
from dl.data import real

# ------------------------------------------------------------------------------- helpers


def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[a.dtype.type]
    header = bytes([0, 0, code, a.ndim]) + np.array(a.shape, ">i4").tobytes()
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_mnist_like(folder, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(a)))
    return arrays


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    truncate: set = set()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        chunk = body[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if self.path in self.truncate:  # the connection drops half-way
            chunk = chunk[: len(chunk) // 2]
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.log, _Handler.truncate = {}, [], set()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------ IDX


def test_read_idx_roundtrip_and_damage(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(real.read_idx(tmp_path / "a.idx"), a)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(real.read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "short.idx").write_bytes(idx_bytes(a)[:-5])
    with pytest.raises(ValueError, match="truncated"):
        real.read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        real.read_idx(tmp_path / "bad.idx")
    (tmp_path / "empty.idx").write_bytes(b"")
    with pytest.raises(ValueError, match="not an IDX file"):
        real.read_idx(tmp_path / "empty.idx")
    (tmp_path / "badgz.gz").write_bytes(gzip.compress(idx_bytes(a))[:-10])
    with pytest.raises(ValueError, match="damaged gzip"):
        real.read_idx(tmp_path / "badgz.gz")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_idx_datasets_from_a_folder(tmp_path, name):
    arrays = write_mnist_like(tmp_path / name)
    ds = data.load(name, root=tmp_path / name)
    assert ds.train[0].shape == (20, 28, 28, 1) and ds.test[0].shape == (10, 28, 28, 1)
    assert ds.train[0].dtype == np.float32 and 0 <= ds.train[0].min() <= ds.train[0].max() <= 1
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_allclose(
        ds.x_test[3, ..., 0], arrays["t10k-images-idx3-ubyte.gz"][3] / 255.0, rtol=1e-6
    )
    assert ds.num_classes == 10


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load("mnist", root=tmp_path / "nothing")
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "download=True" in msg
    assert real.REMOTE["mnist"][0].sha256 in msg


def test_mismatched_images_and_labels(tmp_path):
    write_mnist_like(tmp_path)
    labels = np.zeros(7, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(ValueError, match="20 images but 7 labels"):
        real.load_mnist(root=tmp_path)


# ------------------------------------------------------------------------------- download


def _serve_mnist(server, monkeypatch, tmp_path, *, corrupt=None):
    httpd, base = server
    src = tmp_path / "src"
    write_mnist_like(src)
    files = []
    for f in real.REMOTE["mnist"]:
        body = (src / f.name).read_bytes()
        _Handler.files[f"/mnist/{f.name}"] = body
        sha = "0" * 64 if f.name == corrupt else _sha(body)
        files.append(real.RemoteFile(f.name, f"{base}/mnist/{f.name}", len(body), sha))
    monkeypatch.setitem(real.REMOTE, "mnist", tuple(files))
    return files


def test_download_fetches_checks_and_loads(server, monkeypatch, tmp_path):
    files = _serve_mnist(server, monkeypatch, tmp_path)
    monkeypatch.setenv("DL_DATA_DIR", str(tmp_path / "cache"))
    ds = data.load("mnist", download=True)
    assert ds.train[0].shape == (20, 28, 28, 1)
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f.name for f in files)
    assert len(_Handler.log) == 4
    data.load("mnist", download=True)  # cached: no new requests
    assert len(_Handler.log) == 4


def test_checksum_mismatch_leaves_nothing(server, monkeypatch, tmp_path):
    _serve_mnist(server, monkeypatch, tmp_path, corrupt="train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match="Checksum mismatch"):
        real.load_mnist(root=tmp_path / "c", download=True)
    left = {p.name for p in (tmp_path / "c").iterdir()}
    assert "train-labels-idx1-ubyte.gz" not in left
    assert not any(n.endswith(".part") for n in left)


def test_truncated_transfer_is_not_kept_and_resumes(server, monkeypatch, tmp_path):
    httpd, base = server
    body = os.urandom(50_000)
    _Handler.files["/big.bin"] = body
    _Handler.truncate = {"/big.bin"}
    dest = tmp_path / "big.bin"
    part = dest.with_name("big.bin.part")
    with pytest.raises(ConnectionError, match="resumes"):
        real.download(f"{base}/big.bin", dest, sha256=_sha(body), size=len(body))
    assert not dest.exists()  # a short file is never mistaken for the real one
    assert part.stat().st_size == 25_000
    # The connection is good again: the download resumes from what .part holds.
    _Handler.truncate = set()
    real.download(f"{base}/big.bin", dest, sha256=_sha(body), size=len(body))
    assert dest.read_bytes() == body and not part.exists()
    assert _Handler.log[-1] == ("/big.bin", "bytes=25000-")
    # Without a known size, a short file fails its checksum and is not kept either.
    _Handler.truncate = {"/big.bin"}
    with pytest.raises(ValueError, match="Checksum mismatch"):
        real.download(f"{base}/big.bin", tmp_path / "b2.bin", sha256=_sha(body))
    assert not (tmp_path / "b2.bin").exists() and not (tmp_path / "b2.bin.part").exists()


def test_offline_error_says_where_to_put_the_file(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ConnectionError, match="Offline\\? Put the file at"):
        real.download(f"http://127.0.0.1:{port}/x.gz", tmp_path / "x.gz", sha256="0" * 64)


# ---------------------------------------------------------------------------------- CIFAR


def test_cifar10_and_cifar100_archives(tmp_path):
    (tmp_path / "c10").mkdir()
    cifar_tar(tmp_path / "c10" / "cifar-10-python.tar.gz")
    ds = data.load("cifar10", root=tmp_path / "c10")
    assert ds.train[0].shape == (30, 32, 32, 3) and ds.test[0].shape == (6, 32, 32, 3)
    assert ds.class_names[:2] == ("c0", "c1") and ds.num_classes == 10
    (tmp_path / "c100").mkdir()
    cifar_tar(tmp_path / "c100" / "cifar-100-python.tar.gz", ten=False)
    ds = data.load("cifar100", root=tmp_path / "c100")
    assert ds.train[0].shape == (6, 32, 32, 3) and ds.num_classes == 100


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    poison = pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2)
    (tmp_path / "c").mkdir()
    cifar_tar(tmp_path / "c" / "cifar-10-python.tar.gz", poison=poison)
    with pytest.raises(pickle.UnpicklingError, match="Refusing to unpickle"):
        real.load_cifar10(root=tmp_path / "c")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        real.restricted_loads(pickle.dumps(_Exploit()))


def test_damaged_cifar_archive(tmp_path):
    (tmp_path / "c").mkdir()
    good = cifar_tar(tmp_path / "good.tar.gz")
    (tmp_path / "c" / "cifar-10-python.tar.gz").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a complete cifar10 archive"):
        real.load_cifar10(root=tmp_path / "c")


# ------------------------------------------------------------------------------------ npz


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "toy.npz",
        x_train=rng.normal(size=(8, 3)),
        y_train=np.arange(8) % 2,
        x_test=rng.normal(size=(4, 3)),
        y_test=np.arange(4) % 2,
    )
    ds = real.load_npz(tmp_path / "toy.npz")
    assert ds.name == "toy" and ds.input_shape == (3,) and ds.num_classes == 2
    with pytest.raises(ValueError, match="lacks"):
        real.load_npz(tmp_path / "toy.npz", keys=("a", "b", "c", "d"))
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=[0],
             x_test=np.zeros((1, 1)), y_test=[0])  # fmt: skip
    with pytest.raises(ValueError, match="not a readable .npz"):
        real.load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        real.load_npz(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        real.load_npz(tmp_path / "missing.npz")
