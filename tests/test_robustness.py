"""Nothing lost and every failure a clear error (issue 30): run-folder ownership, resume
against the whole configuration, checksummed checkpoint metadata, early stopping with
step checkpoints, bounded reading of untrusted files, the ELM's limits, and the CLI's
exit codes."""

import gzip
import io
import json
import os
import pickle
import signal
import tarfile
import zipfile
from pathlib import Path

import chex
import numpy as np
import pytest
from _files import cifar_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dl import cli, data, elm, models, optim, parallel, train
from dl.checkpoint import CheckpointManager
from dl.data import real
from dl.rundir import RunFolder, RunFolderError

RUN = ["train", "--model", "mlp", "--dataset", "iris", "--epochs", "2", "--no-progress"]
RUN += ["--model-arg", "widths=(8,)"]


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


# ------------------------------------------------------------------- the run folder


def test_a_second_run_into_a_run_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, *RUN, "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = _cli(capsys, *RUN, "--lr", "0.01", "--out", str(out))
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    code, err = _cli(capsys, *RUN, "--lr", "0.01", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 0.01
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["learning_rate"] == 0.01 and results["epochs"] == 2


def test_resume_refuses_an_edited_config_naming_the_field(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, *RUN, "--out", str(out))[0] == 0
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(cfg, learning_rate=0.5)))
    code, err = _cli(capsys, "train", "--resume", str(out), "--no-progress")
    assert code == 2 and "configured differently" in err and "learning_rate: 0.001 -> 0.5" in err


def test_a_folder_in_use_is_locked(tmp_path):
    with RunFolder(tmp_path / "run"):
        with pytest.raises(RunFolderError, match="in use by another dl process"):
            with RunFolder(tmp_path / "run", overwrite=True):
                pass
    with RunFolder(tmp_path / "run"):  # released on exit
        pass


@pytest.mark.parametrize("kind", ["file", "under_a_file", "dev_null"])
def test_an_out_that_is_not_a_writable_folder(tmp_path, capsys, kind):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "run", "dev_null": "/dev/null"}
    code, err = _cli(capsys, *RUN, "--out", str(out[kind]))
    assert code == 2
    assert ("is not a folder" in err) if kind != "under_a_file" else ("Cannot write" in err)
    assert (tmp_path / "f").read_text() == "x"


def test_bad_values_are_exit_2_and_leave_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _cli(capsys, *RUN, "--model-arg", "widths=(0,)", "--out", str(out))
    assert code == 2 and "Could not build MLP" in err and "widths=(0,)" in err
    assert not out.exists()
    code, err = _cli(capsys, *RUN, "--seed", str(10**20), "--out", str(out))
    assert code == 2 and "seed must be an integer in [0, 4294967295]" in err


def test_damaged_checkpoints_and_a_checkpoints_file_are_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, *RUN, "--out", str(out))[0] == 0
    for meta in (out / "checkpoints").glob("*/meta/*"):
        if meta.is_file():
            meta.write_bytes(b"{not json")
    code, err = _cli(capsys, "train", "--resume", str(out), "--no-progress")
    assert code == 2 and "Every checkpoint" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((out / "config.json").read_text())
    (other / "checkpoints").write_text("a file")
    code, err = _cli(capsys, "train", "--resume", str(other), "--no-progress")
    assert code == 2 and "is not a folder" in err


def test_an_unexpected_error_keeps_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_cmd_models", broken)
    code, err = _cli(capsys, "models")
    assert code == 1 and "RuntimeError: boom" in err and "please report it" in err


# --------------------------------------------------------------------- checkpoints


def _small():
    ds = data.load("digits")
    model = models.get_model("cnn", 10, channels=(4,), dense=(), batch_norm=True)
    tx = optim.make_optimizer("adam", learning_rate=3e-3)
    return ds, model, tx, train.create_state(model, tx, ds.input_shape)


def test_edited_checkpoint_metadata_is_detected_and_skipped(tmp_path):
    ds, model, tx, state = _small()
    train.fit(
        state, train.make_train_step(model, tx), train.make_eval_step(model), ds.train,
        batch_size=64, epochs=2, progress=False, checkpoint_dir=tmp_path,
    )  # fmt: skip
    mngr = CheckpointManager(tmp_path)
    first, last = mngr.steps()
    files = [p for p in (tmp_path / str(last)).rglob("*") if p.is_file() and "meta" in p.parts]
    edited = 0
    for f in files:
        try:
            meta = json.loads(f.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and "batch" in meta:
            f.write_text(json.dumps(dict(meta, batch=meta["batch"] + 1)))
            edited += 1
    assert edited == 1
    with pytest.warns(UserWarning, match="fails its checksum"):
        restored = mngr.restore(state, "latest")
    assert restored.step == first


def test_early_stopping_with_step_checkpoints_resumes_bitwise(tmp_path, monkeypatch):
    ds, model, tx, state = _small()
    fit_data, val = data.validation_split(*ds.train, 0.2, seed=0)

    def run(folder, resume=False):
        return train.fit(
            state, train.make_train_step(model, tx), train.make_eval_step(model), fit_data,
            eval_data={"val": val}, early_stopping=train.EarlyStopping("val/accuracy", patience=2),
            batch_size=64, epochs=5, progress=False, checkpoint_dir=folder,
            checkpoint_every=7, steps_per_call=1, resume=resume,
        )  # fmt: skip

    whole = run(tmp_path / "whole")
    orig, calls = parallel.TrainCalls.run, []

    def interrupted(self, *a):
        out = orig(self, *a)
        calls.append(1)
        if len(calls) == 40:  # in epoch 3, after the best of epochs 1 and 2
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(parallel.TrainCalls, "run", interrupted)
    with pytest.raises(train.TrainingInterrupted):
        run(tmp_path / "cut")
    monkeypatch.undo()
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.best_epoch == whole.best_epoch
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.batch_stats, whole.state.batch_stats)
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)


def test_fit_and_train_name_bad_data(tmp_path):
    ds, model, tx, state = _small()
    step, ev = train.make_train_step(model, tx), train.make_eval_step(model)
    with pytest.raises(ValueError, match=r"eval_data\['test'\] must be an \(x, y\) pair"):
        train.fit(
            state, step, ev, ds.train, eval_data={"test": ds.x_test}, epochs=1, batch_size=64,
            progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="batch_size 5000 is larger than the"):
        train.train(model, ds.train, train.FitConfig(epochs=1, batch_size=5000), progress=False)
    with pytest.raises(ValueError, match="complex numbers"):
        train.fit(
            state, step, ev, (ds.x_train + 1j, ds.y_train), epochs=1, batch_size=64,
            progress=False,
        )  # fmt: skip


# --------------------------------------------------------------------------- the ELM


def test_elm_refuses_what_it_cannot_do():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), np.arange(40) % 3
    with pytest.raises(ValueError, match=r"width 1000000000000 .* needs about .* available"):
        elm.ELMClassifier(10**12).fit(x, y)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        elm.ELMClassifier(batch_size=0).fit(x, y)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        elm.ELMClassifier().predict(x)
    with pytest.raises(ValueError, match="NaN or infinite targets in 1 example.*index 2"):
        elm.ELMRegressor(8).fit(x, np.where(np.arange(40) == 2, np.nan, 1.0))
    with pytest.raises(ValueError, match=r"continuous, not whole numbers \(first y\[0\] = 0.5\)"):
        elm.ELMClassifier(8).fit(x, y + 0.5)
    assert elm.ELMClassifier(8).fit(x, y.astype(float)).score(x, y) > 0.3  # 0.0, 1.0 are fine


def test_elm_memory_estimate_follows_the_solver():
    m = elm.ELMClassifier(100)
    assert m.memory_estimate(50, 10) > 3 * 8 * 50 * 50  # dual: the N x N kernel
    big = elm.ELMClassifier(100).memory_estimate(10_000, 10)
    streamed = elm.ELMClassifier(100, batch_size=100).memory_estimate(10_000, 10)
    assert streamed < big and streamed > 4 * 8 * 100 * 100


# ------------------------------------------------------------------------- the loaders


def _idx(shape, dtype_code=0x08, body=b""):
    return bytes([0, 0, dtype_code, len(shape)]) + np.array(shape, ">i4").tobytes() + body


def test_idx_headers_that_do_not_fit_are_refused_before_allocating(tmp_path):
    f = tmp_path / "a.idx"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        real.read_idx(f)
    f.write_bytes(_idx((-5, 3)))
    with pytest.raises(ValueError, match="negative dimension"):
        real.read_idx(f)
    f.write_bytes(_idx((2**31 - 1, 2**31 - 1, 2**31 - 1)))
    with pytest.raises(ValueError, match="needs .* bytes, the file has 16"):
        real.read_idx(f)
    # A gzip bomb: the header promises 2 GiB; 2 MiB of zeros follow, compressed to 2 KiB.
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(_idx((2**31 - 1,), body=bytes(2**21)), 9))
    with pytest.raises(ValueError, match="compressed bytes can hold"):
        real.read_idx(bomb)


def test_idx_labels_must_be_one_dimensional(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split, n in (("train", 6), ("t10k", 4)):
        body = bytes(n * 28 * 28)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx((n, 28, 28), body=body))
        )
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(_idx((n,), body=bytes(n)))
        )
    assert real._idx_dataset("mnist", folder).num_classes == 10
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx((), body=b"\x03")))
    with pytest.raises(ValueError, match=r"expected labels \(N,\), got shape \(\)"):
        real._idx_dataset("mnist", folder)


def _npz(path, **arrays):
    base = dict(x_train=np.zeros((4, 2)), y_train=np.arange(4) % 2, x_test=np.zeros((2, 2)))
    np.savez(path, **{**base, "y_test": np.arange(2), **arrays})
    return path


def test_npz_damage_lies_and_bombs_are_clear_errors(tmp_path, monkeypatch):
    good = _npz(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:-30])
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    for bad in ("cut.npz", "text.npz"):
        with pytest.raises(ValueError, match="not a readable .npz"):
            real.load_npz(tmp_path / bad)
    with pytest.raises(ValueError, match=r"class ids in \[0, 1048576\); got values from 0 to"):
        real.load_npz(_npz(tmp_path / "huge.npz", y_train=np.array([0, 10**9, 2 * 10**9, 1])))
    with pytest.raises(ValueError, match="complex numbers"):
        real.load_npz(_npz(tmp_path / "c.npz", x_train=np.zeros((4, 2), complex)))
    # A member whose header promises more than it holds.
    lie = tmp_path / "lie.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(lie, "w") as dst:
        for info in src.infolist():
            blob = src.read(info)
            if info.filename == "x_train.npy":
                blob = blob.replace(b"(4, 2)", b"(9, 9)")
            dst.writestr(info.filename, blob)
    with pytest.raises(ValueError, match=r"header says \(9, 9\)"):
        real.load_npz(lie)
    # A deflate bomb, and an array larger than the memory said to be available.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros((2**21,), np.uint8))
        z.writestr("x_train.npy", buf.getvalue())
        for k, v in dict(
            y_train=np.arange(4), x_test=np.zeros((2, 2)), y_test=np.arange(2)
        ).items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(f"{k}.npy", b.getvalue())
    monkeypatch.setattr(real, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match="x_train.npy claims 2.0 MiB, more than the 1.0 MiB"):
        real.load_npz(bomb)
    # Room for the array but not for the float32 copy the loader makes of it.
    monkeypatch.setattr(real, "available_memory", lambda: 8 * 2**20)
    with pytest.raises(ValueError, match=r"\(with its float32 copy\) claims 10.0 MiB"):
        real.load_npz(bomb)


def test_cifar_archives_that_lie_loop_or_refuse_name_the_file(tmp_path, monkeypatch):
    c = tmp_path / "c"
    c.mkdir()
    arch = c / "cifar-10-python.tar.gz"
    cifar_tar(arch, link="data_batch_2")
    with pytest.raises(ValueError, match="data_batch_2 is not a regular file"):
        real.load_cifar10(root=c)
    cifar_tar(arch, meta=pickle.dumps([b"a", b"b"], protocol=2))
    with pytest.raises(ValueError, match="batches.meta is not CIFAR's metadata"):
        real.load_cifar10(root=c)
    cifar_tar(arch, poison=pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(real.RefusedPickleError, match="cifar-10-python.tar.gz:data_batch_1"):
        real.load_cifar10(root=c)
    cifar_tar(arch, poison=pickle.dumps({b"data": b"x" * 100}, protocol=2)[:-20])
    with pytest.raises(ValueError, match="data_batch_1: pickle data was truncated"):
        real.load_cifar10(root=c)
    cifar_tar(arch)
    monkeypatch.setattr(real, "CIFAR_MAX_MEMBER", 1000)
    with pytest.raises(ValueError, match="data_batch_1 claims .* no CIFAR file is larger"):
        real.load_cifar10(root=c)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


# ---------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _only_clear_errors(read, path: Path) -> None:
    try:
        read(path)
    except ValueError as e:
        assert str(path.name) in str(e) or str(path) in str(e), e


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
    shape=st.lists(st.integers(-3, 2**31 - 1), max_size=4),
    body=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_fuzz_idx(tmp_path, code, shape, body, gz):
    blob = bytes([0, 0, code, len(shape)]) + np.array(shape, ">i8").astype(">i4").tobytes() + body
    path = tmp_path / "f.idx"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    _only_clear_errors(real.read_idx, path)


@FUZZ
@given(cut=st.integers(0, 2000), flip=st.integers(0, 2000), byte=st.integers(0, 255))
def test_fuzz_npz(tmp_path, cut, flip, byte):
    blob = bytearray(_npz(tmp_path / "src.npz").read_bytes())
    if flip < len(blob):
        blob[flip] = byte
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(blob[: max(1, len(blob) - cut)]))
    _only_clear_errors(real.load_npz, path)


@FUZZ
@given(cut=st.integers(0, 4000), flip=st.integers(0, 4000), byte=st.integers(0, 255))
def test_fuzz_cifar(tmp_path, cut, flip, byte):
    c = tmp_path / "c"
    c.mkdir(exist_ok=True)
    src = cifar_tar(tmp_path / "src.tar.gz", n=2)
    blob = bytearray(src.read_bytes())
    if flip < len(blob):
        blob[flip] = byte
    (c / "cifar-10-python.tar.gz").write_bytes(bytes(blob[: max(1, len(blob) - cut)]))
    _only_clear_errors(lambda p: real.load_cifar10(root=p.parent), c / "cifar-10-python.tar.gz")


def test_a_tar_member_that_claims_more_than_the_archive_holds(tmp_path):
    """Its header says 4 GiB; the archive holds 10 bytes: a clear error naming the file,
    after decompressing no more than the archive holds."""
    path = tmp_path / "c" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    raw = gzip.decompress(path.read_bytes())
    header = bytearray(raw[:512])
    header[124:136] = b"%011o\x00" % (2**32)  # size field: 4 GiB
    header[148:156] = b"        "
    header[148:156] = b"%06o\x00 " % sum(header)
    path.write_bytes(gzip.compress(bytes(header) + raw[512:]))
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz is not a complete cifar10"):
        real.load_cifar10(root=path.parent)
