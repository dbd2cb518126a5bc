"""dl.elm against float64 NumPy references and brute force (issue 7)."""

import jax
import numpy as np
import pytest
import threadpoolctl
from sklearn.utils.estimator_checks import parametrize_with_checks

from dl import data, elm


@pytest.fixture(scope="module")
def digits_split(digits):
    return digits.x_train.reshape(len(digits.x_train), -1), digits.y_train, digits


def _numpy_reference(model, x, y, ridge):
    """The ELM solved independently in float64 NumPy from the same hidden weights."""
    xs = (x.reshape(len(x), -1) - model.mean_) / model.std_
    w = model.hidden_.weights.astype(np.float64)
    b = model.hidden_.biases.astype(np.float64)
    h = 1.0 / (1.0 + np.exp(-(xs.astype(np.float64) @ w + b)))
    t = (y[:, None] == model.classes_[None]).astype(np.float64)
    beta = np.linalg.solve(h.T @ h + ridge * np.eye(h.shape[1]), h.T @ t)
    return beta


@pytest.mark.parametrize("width, solver", [(200, "primal"), (3000, "dual")])
def test_elm_matches_a_float64_numpy_reference(digits_split, width, solver):
    x, y, ds = digits_split
    model = elm.ELMClassifier(width, 1e-2, seed=3).fit(x, y)
    assert model.solver_ == solver  # auto: dual when L > N
    beta = _numpy_reference(model, x, y, 1e-2)
    np.testing.assert_allclose(model.beta_, beta, rtol=2e-3, atol=2e-4)
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    xts = (xt - model.mean_) / model.std_
    h = 1 / (1 + np.exp(-(xts.astype(np.float64) @ model.hidden_.weights + model.hidden_.biases)))
    np.testing.assert_array_equal(model.predict(xt), model.classes_[np.argmax(h @ beta, 1)])
    assert model.score(xt, ds.y_test) > 0.95


def test_primal_and_dual_agree(digits_split):
    x, y, _ = digits_split
    p = elm.ELMClassifier(300, 1e-1, solver="primal", seed=1).fit(x[:500], y[:500])
    d = elm.ELMClassifier(300, 1e-1, solver="dual", seed=1).fit(x[:500], y[:500])
    np.testing.assert_allclose(p.beta_, d.beta_, rtol=1e-6, atol=1e-8)


def test_gcv_and_loo_match_brute_force():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(30, 12))
    y = rng.integers(0, 3, 30)
    t = np.eye(3)[y]
    ridges = [1e-3, 1e-1, 10.0]
    path = elm.ridge_path(h, t, ridges)
    for k, lam in enumerate(ridges):
        loo_res, loo_wrong = [], []
        for i in range(30):
            keep = np.arange(30) != i
            beta = np.linalg.solve(h[keep].T @ h[keep] + lam * np.eye(12), h[keep].T @ t[keep])
            pred = h[i] @ beta
            loo_res.append(t[i] - pred)
            loo_wrong.append(np.argmax(pred) != y[i])
        np.testing.assert_allclose(path["loo_mse"][k], np.mean(np.square(loo_res)), rtol=1e-9)
        assert path["loo_error"][k] == pytest.approx(np.mean(loo_wrong))
        a = h @ np.linalg.solve(h.T @ h + lam * np.eye(12), h.T)  # hat matrix
        gcv = np.mean((t - a @ t) ** 2) / (1 - np.trace(a) / 30) ** 2
        np.testing.assert_allclose(path["gcv"][k], gcv, rtol=1e-9)
    with pytest.raises(ValueError, match="positive numbers"):
        elm.ridge_path(h, t, [0.0])


def test_streaming_and_several_devices_equal_in_memory(digits_split, tmp_path):
    x, y, _ = digits_split
    full = elm.ELMClassifier(256, 1e-3, seed=0).fit(x, y)
    streamed = elm.ELMClassifier(256, 1e-3, seed=0, batch_size=100).fit(x, y)
    sharded = elm.ELMClassifier(256, 1e-3, seed=0, batch_size=100, devices=8).fit(x, y)
    np.testing.assert_allclose(streamed.beta_, full.beta_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sharded.beta_, full.beta_, rtol=1e-7, atol=1e-9)
    # Data on disk streams too: a memory map is read one batch at a time.
    mm = np.memmap(tmp_path / "x.f32", np.float32, "w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    disk = np.memmap(tmp_path / "x.f32", np.float32, "r", shape=x.shape)
    from_disk = elm.ELMClassifier(256, 1e-3, seed=0, batch_size=64).fit(disk, y)
    np.testing.assert_allclose(from_disk.mean_, full.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_disk.beta_, full.beta_, rtol=1e-4, atol=1e-6)
    assert len(jax.devices()) == 8  # conftest: the sharded fit above used 8 devices


def test_same_key_same_weights_bitwise(digits_split):
    x, y, _ = digits_split
    a = elm.ELMClassifier(128, 1e-2, seed=7).fit(x, y)
    b = elm.ELMClassifier(128, 1e-2, seed=7).fit(x, y)
    c = elm.ELMClassifier(128, 1e-2, seed=8).fit(x, y)
    assert a.beta_.tobytes() == b.beta_.tobytes()
    assert a.beta_.tobytes() != c.beta_.tobytes()


def test_nonfinite_solve_raises_instead_of_returning_nan():
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])  # indefinite: Cholesky gives NaN in JAX
    with pytest.raises(FloatingPointError, match="NaN/Inf output weights at ridge=1e-12"):
        elm.solve_primal(bad, np.ones((2, 1)), 1e-12, dtype="float32")


@pytest.mark.parametrize("activation", ["tanh", "relu", "rbf"])
def test_activations_and_regression(digits_split, activation):
    x, y, ds = digits_split
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    clf = elm.ELMClassifier(500, 1e-1, activation=activation, targets="pm1").fit(x, y)
    assert clf.score(xt, ds.y_test) > 0.85, activation
    reg = elm.ELMRegressor(300, 1e-2, activation=activation).fit(x, (y / 9.0)[:, None])
    assert reg.predict(xt).shape == (len(xt), 1) and reg.score(xt, (ds.y_test / 9.0)[:, None]) > 0.5


def test_cross_validation_selects_width_and_ridge(digits_split):
    x, y, _ = digits_split
    sel = elm.select(x, y, widths=(32, 256), ridges=(1e-4, 1e-1, 1e3), folds=3)
    assert sel["table"].shape == (2, 3)
    assert sel["width"] == 256 and sel["cv_accuracy"] > 0.9
    assert sel["table"][1, 1] > sel["table"][0, 1]  # wider is better here


def test_bad_input_gets_clear_errors(digits_split):
    x, y, _ = digits_split
    # scikit-learn's convention: the constructor stores, fit validates.
    with pytest.raises(ValueError, match="ridge must be > 0"):
        elm.ELMClassifier(10, 0.0).fit(x, y)
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        elm.ELMClassifier(10, activation="swish").fit(x, y)
    with pytest.raises(ValueError, match="stream with solver='primal'"):
        elm.ELMClassifier(10, solver="dual", batch_size=10).fit(x, y)
    model = elm.ELMClassifier(16).fit(x, y)
    with pytest.raises(
        ValueError, match="X has 10 features, but ELMClassifier is expecting 64 features"
    ):
        model.predict(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"one label per example, shape \(1437,\)"):
        elm.ELMClassifier(16).fit(x, np.eye(10)[y])


def test_float32_gram_and_solve_agree_with_float64():
    """dtype="float32" (the fast path: Gram matrices and solve in float32) predicts as the
    float64 default does at a moderate ridge, and its Gram matrix is float32."""
    ds = data.load("digits")
    x, xt = ds.x_train.reshape(len(ds.x_train), -1), ds.x_test.reshape(len(ds.x_test), -1)
    m64 = elm.ELMClassifier(500, 1e-1, seed=0).fit(x, ds.y_train)
    m32 = elm.ELMClassifier(500, 1e-1, seed=0, dtype="float32").fit(x, ds.y_train)
    assert np.mean(m32.predict(xt) == m64.predict(xt)) >= 0.99
    assert abs(m32.score(xt, ds.y_test) - m64.score(xt, ds.y_test)) <= 0.01
    hth, _ = elm.gram(
        m32.hidden_, (x - m32.mean_) / m32.std_, np.ones((len(x), 1)), dtype="float32"
    )
    assert hth.dtype == np.float32


def test_gram_rejects_an_unknown_dtype():
    hidden = elm.init_hidden(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'; got 'float16'"):
        elm.gram(hidden, np.zeros((5, 3), np.float32), np.zeros((5, 1)), dtype="float16")


def _blas_threads():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_solves_run_on_one_blas_thread_with_the_same_weights(digits_split, monkeypatch, solver):
    """The Cholesky solves run with OpenBLAS limited to one thread (a speed fix), the
    thread counts are restored afterwards, and the weights are those of the unlimited
    solve up to rounding (OpenBLAS's threads split its sums differently)."""
    import contextlib

    x, y, _ = digits_split
    seen, solve = [], elm._cholesky_solve

    def recording(*args):
        out = jax.block_until_ready(solve(*args))
        seen.append(_blas_threads())
        return out

    monkeypatch.setattr(elm, "_cholesky_solve", recording)
    syrk_threads, syrk = [], elm._host_syrk
    monkeypatch.setattr(
        elm, "_host_syrk", lambda h: syrk_threads.append(_blas_threads()) or syrk(h)
    )
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # 2 even on a 1-core machine
        before = _blas_threads()
        assert before and min(before) == 2
        one = elm.ELMClassifier(300, 1e-2, seed=0, solver=solver).fit(x[:500], y[:500])
        assert seen and all(n == 1 for threads in seen for n in threads), seen
        if solver == "primal":  # the host Gram matrix too
            assert syrk_threads and all(n == 1 for ts in syrk_threads for n in ts), syrk_threads
        assert _blas_threads() == before
        monkeypatch.setattr(elm, "_one_blas_thread", contextlib.nullcontext)
        seen.clear()
        free = elm.ELMClassifier(300, 1e-2, seed=0, solver=solver).fit(x[:500], y[:500])
        assert seen == [before]
    scale = np.abs(free.beta_).max()
    np.testing.assert_allclose(one.beta_, free.beta_, rtol=0, atol=1e-8 * scale)
    np.testing.assert_array_equal(one.predict(x), free.predict(x))


@pytest.mark.parametrize("batch_size", [None, 100])
@pytest.mark.parametrize("bad", ["nan", "inf", "both_infs"])
def test_nonfinite_inputs_are_rejected(digits_split, bad, batch_size):
    """NaN or Inf anywhere in x stops the fit, streamed or not (+Inf and -Inf in one
    column too, whose sum is NaN)."""
    x, y, _ = digits_split
    x = x.astype(np.float32).copy()
    if bad == "nan":
        x[700, 5] = np.nan
    elif bad == "inf":
        x[3, 63] = np.inf
    else:
        x[10, 20], x[11, 20] = np.inf, -np.inf
    where = {
        (None, "nan"): r"in feature\(s\) \[5\]",
        (None, "inf"): r"in feature\(s\) \[63\]",
        (None, "both_infs"): r"in feature\(s\) \[20\]",
        (100, "nan"): "first at example 700, feature 5",
        (100, "inf"): "first at example 3, feature 63",
        (100, "both_infs"): "first at example 10, feature 20",
    }[batch_size, bad]
    with pytest.raises(ValueError, match=rf"x contains NaN or Inf \({where}\); clean the inputs"):
        elm.ELMClassifier(32, batch_size=batch_size).fit(x, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size", [None, 500])
def test_host_gram_equals_xla_gram(digits_split, monkeypatch, dtype, batch_size):
    """On the CPU, H^T H is formed by NumPy's syrk on row blocks over Python threads
    (`_host_syrk`, a speed fix); it equals XLA's H^T H up to rounding, streamed or not,
    with a row count that does not split evenly over the threads."""
    x, _, _ = digits_split
    x = ((x - x.mean(0)) / (x.std(0) + 1)).astype(np.float32)
    t = np.random.default_rng(0).standard_normal((len(x), 3))
    hidden = elm.init_hidden(jax.random.key(0), x.shape[1], 300)
    calls, syrk = [], elm._host_syrk
    monkeypatch.setattr(elm, "_host_syrk", lambda h: calls.append(h.shape) or syrk(h))
    monkeypatch.setattr(elm, "_cpus", lambda: 3)  # 1437 rows: blocks of 479
    hth, htt = elm.gram(hidden, x, t, batch_size=batch_size, dtype=dtype)
    assert calls == ([(1437, 300)] if batch_size is None else [(500, 300)] * 3)
    monkeypatch.setattr(elm, "_HOST_GRAM_BYTES", 3 * 300 * 300 * np.dtype(dtype).itemsize - 1)
    assert not elm._host_gram(None, 300, dtype)  # 3 partial sums over the memory cap
    n_calls = len(calls)
    ref_hth, ref_htt = elm.gram(hidden, x, t, batch_size=batch_size, dtype=dtype)
    assert len(calls) == n_calls  # XLA's product this time
    assert hth.dtype == ref_hth.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(hth, ref_hth, rtol=rtol, atol=rtol * np.abs(ref_hth).max())
    np.testing.assert_allclose(htt, ref_htt, rtol=rtol, atol=rtol * np.abs(ref_htt).max())
    np.testing.assert_array_equal(hth, hth.T)  # both triangles filled


@pytest.mark.parametrize("rows, cpus", [(1, 4), (100, 1), (130, 2), (1000, 7)])
def test_host_syrk_sums_its_row_blocks(monkeypatch, rows, cpus):
    h = np.random.default_rng(rows).standard_normal((rows, 20))
    monkeypatch.setattr(elm, "_cpus", lambda: cpus)
    np.testing.assert_allclose(elm._host_syrk(h), h.T @ h, rtol=1e-12, atol=1e-12 * rows)


def test_feature_statistics_are_numpy_float64_ones(digits_split):
    """The fit's means and stds (computed by XLA in float64) are NumPy's float64 ones."""
    x, y, _ = digits_split
    model = elm.ELMClassifier(16).fit(x, y)
    std = x.std(0, dtype=np.float64)
    np.testing.assert_allclose(model.mean_, x.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(model.std_, np.where(std > 1e-8, std, 1.0), rtol=1e-6)


# ------------------------------------------------------- scikit-learn and the pure core


@parametrize_with_checks([elm.ELMClassifier(width=20), elm.ELMRegressor(width=20)])
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check of scikit-learn's `check_estimator` applies and passes (none skipped;
    the array-API check skips itself without SCIPY_ARRAY_API)."""
    check(estimator)


def test_elm_in_scikit_learn_tools(digits_split):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, ds = digits_split
    xt, yt = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    m = elm.ELMClassifier(500, 1e-1, seed=2)
    assert repr(m) == "ELMClassifier(ridge=0.1, seed=2, width=500)"
    c = clone(m).set_params(width=300)
    assert c.get_params()["width"] == 300 and m.width == 500
    assert cross_val_score(m, x, y, cv=3).mean() > 0.94
    grid = GridSearchCV(m, {"width": [100, 500], "ridge": [1e-2, 1e-1]}, cv=3).fit(x, y)
    assert grid.best_params_["width"] == 500 and grid.score(xt, yt) > 0.95
    pipe = make_pipeline(StandardScaler(), elm.ELMClassifier(500, 1e-1)).fit(x, y)
    proba = pipe.predict_proba(xt)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (proba.argmax(1) == pipe.predict(xt)).all() and pipe.score(xt, yt) > 0.95


def test_elm_fit_and_apply_are_pure_and_match_the_estimator(digits_split):
    x, y, ds = digits_split
    xt, yt = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    t = jax.nn.one_hot(y, 10)
    fit = jax.jit(lambda k: elm.elm_fit(k, x, t, width=500, ridge=1e-1))
    p = fit(jax.random.key(3))
    est = elm.ELMClassifier(500, 1e-1, seed=3).fit(x, y)
    np.testing.assert_array_equal(np.asarray(p.w), est.hidden_.weights)  # bitwise
    pred = np.asarray(jax.jit(elm.elm_apply)(p, xt).argmax(1))
    assert np.mean(pred == est.predict(xt)) > 0.99  # float32 solve: same predictions
    with elm._x64():  # float64 solve: the estimator's weights
        p64 = elm.elm_fit(jax.random.key(3), x, t, width=500, ridge=1e-1)
        np.testing.assert_allclose(np.asarray(p64.beta), est.beta_, rtol=1e-4, atol=1e-5)
    keys = jax.random.split(jax.random.key(0), 4)
    many = jax.vmap(lambda k: elm.elm_fit(k, x, t, width=500, ridge=1e-1))(keys)
    accs = jax.vmap(lambda q: (elm.elm_apply(q, xt).argmax(1) == yt).mean())(many)
    assert accs.shape == (4,) and float(accs.min()) > 0.95
    assert not np.allclose(many.w[0], many.w[1])  # one hidden layer per key
    est_dual = elm.ELMClassifier(500, 1e-1, seed=3, solver="dual").fit(x[:200], y[:200])
    with elm._x64():
        dual = elm.elm_fit(jax.random.key(3), x[:200], t[:200], width=500, ridge=1e-1)
        np.testing.assert_allclose(np.asarray(dual.beta), est_dual.beta_, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"targets must be \(N, K\)"):
        elm.elm_fit(jax.random.key(0), x, y, width=10, ridge=1.0)
