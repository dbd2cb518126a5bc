"""Real datasets from their standard files: MNIST, Fashion-MNIST and KMNIST (IDX),
CIFAR-10 and CIFAR-100 (the "python version" batches) and any `.npz`.

Nothing here is needed by default (the embedded datasets ship with the install). With
`download=True` the files are fetched from their canonical addresses into a cache folder
(`$DL_DATA_DIR`, default `~/.cache/dl`), resumably (an interrupted download continues from
its `.part` file with an HTTP Range request), verified against their SHA-256, and only
then renamed into place, so a file in the cache is always whole. Offline, the error says
which file to put where.

CIFAR's batches are Python pickles. They are read with a restricted unpickler that
accepts only the types those files hold (dicts, lists, strings, bytes, numbers and numpy
arrays); a pickle that asks for anything else (e.g. `os.system`) is refused. Never
`pickle.load` a downloaded file.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from dl._errors import available_memory, format_bytes
from dl.data.datasets import Dataset


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: its name, canonical address, size and SHA-256."""

    name: str
    url: str
    size: int
    sha256: str


def _idx_files(base: str, sums: dict[str, tuple[int, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, base + n, size, sha) for n, (size, sha) in sums.items())


# Sizes and SHA-256 as published by TensorFlow Datasets' url_checksums (and Keras for the
# CIFAR python archives).
REMOTE: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _idx_files(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": (
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            "train-labels-idx1-ubyte.gz": (
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "t10k-images-idx3-ubyte.gz": (
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        },
    ),
    "fashion_mnist": _idx_files(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": (
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            "train-labels-idx1-ubyte.gz": (
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            "t10k-images-idx3-ubyte.gz": (
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        },
    ),
    "kmnist": _idx_files(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        {
            "train-images-idx3-ubyte.gz": (
                18165135,
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            ),
            "train-labels-idx1-ubyte.gz": (
                29497,
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            ),
            "t10k-images-idx3-ubyte.gz": (
                3041136,
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                5120,
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            ),
        },
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            170498071,
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    "cifar100": (
        RemoteFile(
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            169001437,
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ),
    ),
}

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "fashion_mnist": (
        "t-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),  # fmt: skip
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),  # fmt: skip
}


def cache_dir() -> Path:
    """Where downloads go: $DL_DATA_DIR, else ~/.cache/dl."""
    return Path(os.environ.get("DL_DATA_DIR") or Path.home() / ".cache" / "dl")


# ------------------------------------------------------------------------------- download


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str, dest: str | os.PathLike, *, sha256: str, size: int | None = None, timeout=30.0
) -> Path:
    """Fetch `url` to `dest`, resumably and atomically, checking its SHA-256.

    Bytes go to `dest.part`; an existing `.part` is continued with a Range request (a
    server that ignores Range sends the whole file, which then replaces it). Only a file
    whose SHA-256 matches is renamed to `dest` (`os.replace`, atomic on one file system);
    a mismatch deletes the partial file and raises.

    Args:
      url: http(s) address.
      dest: final path.
      sha256: expected hex digest.
      size: expected size in bytes, when known (a longer `.part` is discarded).
      timeout: socket timeout in seconds.

    Returns:
      `dest`.

    Raises:
      ConnectionError: the server could not be reached (offline); says where to put
        the file by hand.
      ValueError: the checksum does not match.
    """
    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "dl-toolkit"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            with open(part, "ab" if resumed else "wb") as f:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already complete
            pass
        else:
            raise ConnectionError(
                f"Downloading {url} failed: HTTP {e.code} {e.reason}. {_by_hand(dest, sha256)}"
            ) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        kept = part.stat().st_size if part.is_file() else 0
        raise ConnectionError(
            f"Could not download {url} ({e}); {part.name} keeps the {kept} bytes received, "
            f"and the next try resumes from there. {_by_hand(dest, sha256)}"
        ) from e
    received = part.stat().st_size if part.is_file() else 0
    if size is not None and received < size:  # the connection dropped: keep it, resume later
        raise ConnectionError(
            f"Download of {url} stopped at {received} of {size} bytes; {part.name} keeps them "
            f"and the next try resumes from there. {_by_hand(dest, sha256)}"
        )
    got = sha256_of(part)
    if got != sha256:
        received = part.stat().st_size
        part.unlink()
        raise ValueError(
            f"Checksum mismatch for {url}: got SHA-256 {got} ({received} bytes), expected "
            f"{sha256}{f' ({size} bytes)' if size else ''}. The partial file was deleted; "
            "retry, or fetch the file by hand and check it with sha256sum."
        )
    os.replace(part, dest)
    return dest


def _by_hand(dest: Path, sha256: str) -> str:
    return f"Offline? Put the file at {dest} (SHA-256 {sha256}) and load again."


def fetch(name: str, *, root: str | os.PathLike | None = None, download_missing: bool) -> Path:
    """The folder holding dataset `name`'s files, downloading the missing ones if asked."""
    folder = Path(root) if root is not None else cache_dir() / name
    missing = [f for f in REMOTE[name] if not (folder / f.name).is_file()]
    if missing and not download_missing:
        listing = "\n".join(
            f"  {folder / f.name}  (from {f.url}, SHA-256 {f.sha256})" for f in missing
        )
        raise FileNotFoundError(
            f"Dataset {name!r} needs these files, which are not there:\n{listing}\n"
            f"Pass download=True (`dl.data.load({name!r}, download=True)`) to fetch them, "
            "or copy them there by hand."
        )
    for f in missing:
        download(f.url, folder / f.name, sha256=f.sha256, size=f.size)
    return folder


# ------------------------------------------------------------------------------------ IDX

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# Deflate cannot compress better than about 1032:1, so a gzip (or zip) member that claims
# more than this many times its compressed size is damaged or hostile, and is refused
# before anything is allocated.
DEFLATE_MAX_RATIO = 1032


def check_claimed_size(where: str, claimed: int, compressed: int | None = None) -> None:
    """Refuse, before allocating, an array or member whose header claims more bytes than
    its compressed size can hold or than this process can allocate."""
    if compressed is not None and claimed > DEFLATE_MAX_RATIO * compressed + 1024:
        raise ValueError(
            f"{where} claims {format_bytes(claimed)}, more than {compressed} compressed bytes "
            f"can hold (deflate reaches at most {DEFLATE_MAX_RATIO}:1): the file is damaged "
            "or built to exhaust memory. Delete it and download again."
        )
    have = available_memory()
    if have is not None and claimed > have:
        raise ValueError(
            f"{where} claims {format_bytes(claimed)}, more than the {format_bytes(have)} of "
            "memory available: it is damaged, or too large to load on this machine."
        )


def _gzip_errors():
    import zlib

    return (OSError, EOFError, zlib.error)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian int32
    per dimension, then the data in C order. The header is read and checked first (sizes
    against the file's, and against memory), and a gzipped file is decompressed only up
    to the size the header promises.

    Raises:
      ValueError: not an IDX file, an unknown type, a header that does not fit the file,
      or fewer or more bytes than the header says.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes), so not an IDX file; download it again.")
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw) if gz else raw
        try:
            return _read_idx_stream(path, f, size, gz)
        except _gzip_errors() as e:
            raise ValueError(
                f"{path} is a damaged gzip file ({e}); delete it and download again."
            ) from e


def _read_idx_stream(path: Path, f, size: int, gz: bool) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path} is not an IDX file (it must start with two zero bytes).")
    code, ndim = head[2], head[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}.")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(
            f"{path} is truncated: its header needs {4 + 4 * ndim} bytes, has {4 + len(dims)}."
        )
    shape = tuple(int(d) for d in np.frombuffer(dims, ">i4", ndim))
    if any(d < 0 for d in shape):
        raise ValueError(f"{path}: the header gives a negative dimension, shape {shape}.")
    dtype = np.dtype(_IDX_TYPES[code])
    need = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    header = 4 + 4 * ndim
    if not gz and header + need != size:
        raise ValueError(
            f"{path} is {'truncated' if size < header + need else 'too long'}: shape {shape} "
            f"of {dtype} needs {header + need} bytes, the file has {size}. Delete it and "
            "download again."
        )
    check_claimed_size(f"{path} (IDX shape {shape})", need, size if gz else None)
    body = f.read(need + 1)  # one byte more than promised tells "too long" apart
    if len(body) != need:
        raise ValueError(
            f"{path} is {'truncated' if len(body) < need else 'too long'}: shape {shape} of "
            f"{dtype} needs {header + need} bytes, the file has "
            f"{header + len(body)}{'+' if len(body) > need else ''}. Delete it and download "
            "again."
        )
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_dataset(name: str, folder: Path) -> Dataset:
    from dl.data.datasets import _as_dataset

    def images(f):
        x = read_idx(folder / f)
        if x.ndim != 3:
            raise ValueError(f"{folder / f}: expected images (N, H, W), got shape {x.shape}.")
        check_claimed_size(f"{folder / f} (as float32)", 8 * x.size)  # two float32 copies
        return (x.astype(np.float32) / 255.0)[..., None]

    x_tr, x_te = images("train-images-idx3-ubyte.gz"), images("t10k-images-idx3-ubyte.gz")

    def labels(f):
        y = read_idx(folder / f)
        if y.ndim != 1:
            raise ValueError(f"{folder / f}: expected labels (N,), got shape {y.shape}.")
        return y.astype(np.int32)

    y_tr = labels("train-labels-idx1-ubyte.gz")
    y_te = labels("t10k-labels-idx1-ubyte.gz")
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if len(x) != len(y):
            raise ValueError(f"{name} {split}: {len(x)} images but {len(y)} labels in {folder}.")
    return _as_dataset(
        name, x_tr, y_tr, x_te, y_te, CLASS_NAMES[name],
        f"{name} from IDX files in {folder}, pixels scaled to [0, 1]",
    )  # fmt: skip


def load_mnist(*, root=None, download: bool = False) -> Dataset:
    """MNIST (60000/10000 28x28 digits) from its IDX files."""
    return _idx_dataset("mnist", fetch("mnist", root=root, download_missing=download))


def load_fashion_mnist(*, root=None, download: bool = False) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) from its IDX files."""
    return _idx_dataset(
        "fashion_mnist", fetch("fashion_mnist", root=root, download_missing=download)
    )


def load_kmnist(*, root=None, download: bool = False) -> Dataset:
    """Kuzushiji-MNIST (Clanuwat et al. 2018) from its IDX files."""
    return _idx_dataset("kmnist", fetch("kmnist", root=root, download_missing=download))


# ---------------------------------------------------------------------------------- CIFAR


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's batches contain: builtin containers and scalars and
    numpy arrays. Any other global (a function, a class that runs code) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to unpickle {module}.{name}: a CIFAR batch holds only dicts, lists, "
            "strings and numpy arrays, so this file is not one (or has been tampered with)."
        )


def restricted_loads(data: bytes):
    """`pickle.loads` through `RestrictedUnpickler` (bytes keys, as CIFAR's are)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """A CIFAR file's pickle asked for something a CIFAR batch never holds, or is not a
    pickle at all; the message names the file. (A ValueError too: bad input, exit 2.)"""


def _load_pickle(blob: bytes, where: str):
    try:
        return restricted_loads(blob)
    except pickle.UnpicklingError as e:
        raise RefusedPickleError(f"{where}: {e}") from e
    except Exception as e:  # truncated or corrupt pickle data
        raise RefusedPickleError(
            f"{where} is not a readable CIFAR pickle ({type(e).__name__}: {e})."
        ) from e


def _cifar_batch(blob: bytes, label_key: bytes, where: str):
    d = _load_pickle(blob, where)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise ValueError(f"{where}: expected a dict with b'data' and {label_key!r}.")
    x = np.asarray(d[b"data"], np.uint8)
    y = np.asarray(d[label_key], np.int32)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise ValueError(f"{where}: data shape {x.shape} and {len(y)} labels; expected (N, 3072).")
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return x, y


# CIFAR-100's training pickle, the largest file of either archive, is about 155 MB.
CIFAR_MAX_MEMBER = 256 * 2**20


def _read_cifar(name: str, archive: Path) -> Dataset:
    from dl.data.datasets import _as_dataset

    ten = name == "cifar10"
    folder = "cifar-10-batches-py" if ten else "cifar-100-python"
    train_members = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    label_key = b"labels" if ten else b"fine_labels"
    compressed = archive.stat().st_size
    try:
        with tarfile.open(archive, "r:gz") as tar:

            def member(m):
                # Only regular files, of a size the archive can hold: never a link (which
                # may point anywhere in the archive, or loop), nor a member whose header
                # promises more than CIFAR holds; read no further than that size.
                where = f"{archive}:{folder}/{m}"
                info = tar.getmember(f"{folder}/{m}")
                if not info.isfile():
                    raise ValueError(f"{where} is not a regular file; a CIFAR archive holds files.")
                if info.size > CIFAR_MAX_MEMBER:
                    raise ValueError(
                        f"{where} claims {format_bytes(info.size)}; no CIFAR file is larger "
                        f"than {format_bytes(CIFAR_MAX_MEMBER)}. The archive is damaged or "
                        "hostile: delete it and download again."
                    )
                check_claimed_size(where, info.size, compressed)
                f = tar.extractfile(info)
                return f.read(info.size)

            parts = [_cifar_batch(member(m), label_key, f"{archive}:{m}") for m in train_members]
            x_te, y_te = _cifar_batch(member("test"), label_key, f"{archive}:test")
            meta_name = "batches.meta" if ten else "meta"
            meta = _load_pickle(member(meta_name), f"{archive}:{meta_name}")
    except (tarfile.TarError, KeyError, RecursionError, *_gzip_errors()) as e:
        raise ValueError(
            f"{archive} is not a complete {name} archive ({type(e).__name__}: {e}). Delete it "
            "and download again."
        ) from e
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    names_key = b"label_names" if ten else b"fine_label_names"
    if not isinstance(meta, dict) or not isinstance(meta.get(names_key, []), list | tuple):
        raise ValueError(
            f"{archive}:{meta_name} is not CIFAR's metadata: expected a dict with a list "
            f"{names_key!r}, got {type(meta).__name__}."
        )
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, []))
    return _as_dataset(name, x_tr, y_tr, x_te, y_te, names, f"{name} from {archive}")


def load_cifar10(*, root=None, download: bool = False) -> Dataset:
    """CIFAR-10 (50000/10000 32x32x3) from the python-version archive, read safely."""
    folder = fetch("cifar10", root=root, download_missing=download)
    return _read_cifar("cifar10", folder / REMOTE["cifar10"][0].name)


def load_cifar100(*, root=None, download: bool = False) -> Dataset:
    """CIFAR-100 (fine labels) from the python-version archive, read safely."""
    folder = fetch("cifar100", root=root, download_missing=download)
    return _read_cifar("cifar100", folder / REMOTE["cifar100"][0].name)


# ------------------------------------------------------------------------------------ npz


def load_npz(
    path: str | os.PathLike,
    *,
    keys: tuple[str, str, str, str] = ("x_train", "y_train", "x_test", "y_test"),
    name: str | None = None,
) -> Dataset:
    """Any `.npz` holding train and test arrays (read with `allow_pickle=False`).

    Args:
      path: the file.
      keys: names of x_train, y_train, x_test, y_test inside it.
      name: dataset name (default the file's stem).
    """
    from dl.data.datasets import _as_dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .npz file at {path}.")
    arrays = _read_npz(path, keys)
    x_tr, y_tr, x_te, y_te = (arrays[k] for k in keys)
    for x, k in ((x_tr, keys[0]), (x_te, keys[2])):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"{path}: {k} must be numeric; got dtype {x.dtype}.")
        if np.iscomplexobj(x):
            raise ValueError(
                f"{path}: {k} holds complex numbers ({x.dtype}); store real features (e.g. "
                "the real and imaginary parts side by side)."
            )
    for y, k in ((y_tr, keys[1]), (y_te, keys[3])):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"{path}: {k} must be integer class labels (N,); got {y.dtype} {y.shape}."
            )
        if len(y) and (y.min() < 0 or y.max() >= MAX_CLASSES):
            raise ValueError(
                f"{path}: {k} must hold class ids in [0, {MAX_CLASSES}); got values from "
                f"{y.min()} to {y.max()}. Map the labels to 0..K-1 first."
            )
    if len(y_tr) == 0 or len(y_te) == 0:
        raise ValueError(f"{path}: the training and test sets must not be empty.")
    x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
    k = int(max(y_tr.max(), y_te.max())) + 1
    return _as_dataset(
        name or path.stem, x_tr, y_tr.astype(np.int32), x_te, y_te.astype(np.int32),
        tuple(str(i) for i in range(k)), f"arrays from {path}",
    )  # fmt: skip


# More classes than this is not a classification dataset dl can hold a name for each of.
MAX_CLASSES = 2**20


def _read_npz(path: Path, keys) -> dict[str, np.ndarray]:
    """The named arrays of a .npz, each checked before it is read: a plain .npy member
    (no pickled objects), whose header agrees with its size in the zip, of a size that
    its compressed bytes and this machine's memory can hold."""
    import zipfile

    bad = f"{path} is not a readable .npz file"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(
            f"{bad} ({e}): it is truncated, damaged, or not a zip of .npy arrays (save one "
            "with numpy.savez)."
        ) from e
    with zf:
        members = {n.removesuffix(".npy"): n for n in zf.namelist()}
        missing = [k for k in keys if k not in members]
        if missing:
            raise ValueError(
                f"{path} lacks {missing}; it has {sorted(members)}. Pass keys=(x_train, "
                "y_train, x_test, y_test) naming its arrays."
            )
        try:
            return {k: _read_npy_member(zf, zf.getinfo(members[k]), path) for k in keys}
        except (zipfile.BadZipFile, OSError, EOFError, *_gzip_errors()) as e:
            raise ValueError(f"{bad}: a member is damaged ({type(e).__name__}: {e}).") from e


def _read_npy_member(zf, info, path: Path) -> np.ndarray:
    import zipfile

    fmt = np.lib.format
    where = f"{path}:{info.filename}"
    with zf.open(info) as fp:
        try:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as e:
            raise ValueError(f"{path} is not a readable .npz file: {where}: {e}.") from e
        header = fp.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{path} is not a readable .npz file: {where} holds Python objects, which would "
            "have to be unpickled; dl reads numeric arrays only."
        )
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if info.file_size != header + nbytes:
        raise ValueError(
            f"{path} is not a readable .npz file: {where}'s header says {shape} of {dtype} "
            f"({header + nbytes} bytes) but the member has {info.file_size}: it is damaged."
        )
    deflated = info.compress_type != zipfile.ZIP_STORED
    check_claimed_size(where, nbytes, info.compress_size if deflated else None)
    # The loader then holds a float32 copy beside it: both must fit.
    check_claimed_size(f"{where} (with its float32 copy)", nbytes + 4 * count)
    with zf.open(info) as fp:
        return np.asarray(fmt.read_array(fp, allow_pickle=False))
