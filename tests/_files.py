"""Small files in real formats, written by the tests that read them."""

import io
import pickle
import tarfile

import numpy as np


def cifar_tar(path, *, ten=True, poison=None, n=6, meta=None, link=None):
    """A CIFAR-10 (or -100) archive of n images per batch; `poison` replaces the first
    training batch's bytes, `meta` the metadata's, and `link` names a member written as a
    symbolic link to itself (a loop) instead of a file."""
    rng = np.random.default_rng(0)
    folder = "cifar-10-batches-py" if ten else "cifar-100-python"
    key = b"labels" if ten else b"fine_labels"
    members = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    for m in [*names, "test"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key: rng.integers(0, 10 if ten else 100, n).tolist(),
            b"batch_label": b"a batch",
        }
        members[m] = pickle.dumps(batch, protocol=2)
    meta_key = b"label_names" if ten else b"fine_label_names"
    members["batches.meta" if ten else "meta"] = pickle.dumps(
        {meta_key: [f"c{i}".encode() for i in range(10 if ten else 100)]}, protocol=2
    )
    if poison:
        members[names[0]] = poison
    if meta is not None:
        members["batches.meta" if ten else "meta"] = meta
    with tarfile.open(path, "w:gz") as tar:
        for m, blob in members.items():
            info = tarfile.TarInfo(f"{folder}/{m}")
            if m == link:
                info.type, info.linkname = tarfile.SYMTYPE, f"{folder}/{m}"
                tar.addfile(info)
                continue
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path
