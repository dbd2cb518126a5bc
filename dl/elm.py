"""Extreme Learning Machines (Huang et al. 2006) in JAX.

An ELM is a single hidden layer with RANDOM, fixed weights and a linear readout solved in
closed form by ridge regression:

    H = g(X W + b)            (N, L), W and b drawn once from a key
    beta = argmin ||H beta - T||^2 + ridge ||beta||^2

solved by Cholesky in the primal, (H^T H + ridge I) beta = H^T T, when N >= L, or in
the dual, beta = H^T (H H^T + ridge I)^-1 T, when L > N. The Gram matrices are
accumulated in float64 (float32 Gram matrices lose the small eigenvalues the ridge is
meant to regularise) and the solve's result is checked: JAX's Cholesky returns NaN on a
matrix that is not positive definite instead of raising, and `fit` never returns NaN
weights silently.

- `ridge_path`: one thin SVD of H gives, for a whole grid of ridge values, the
  generalised cross-validation score and the EXACT leave-one-out residuals (the
  PRESS identity e_i / (1 - A_ii) with the hat matrix A).
- `select`: k-fold cross-validation of width x ridge (one SVD per width and fold).
- `fit(..., batch_size=B)` streams the data: H^T H and H^T T are accumulated batch by
  batch (each batch compiled once, padded and masked), so N is not bounded by memory;
  with `devices=k` each batch is split over k devices (XLA sums the Gram matrices). On
  one CPU device, H is computed by XLA and H^T H by BLAS's syrk (`_host_syrk`).
- Everything is a function of a `jax.random` key: the same key gives bitwise the same
  output weights.

`ELMClassifier` / `ELMRegressor` wrap these behind the fit / predict / score interface
that `dl.baselines` uses for every model in the experiments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from dl import _progress
from dl._errors import (
    available_memory,
    check_positive_int,
    check_seed,
    format_bytes,
    unknown_name,
)

ACTIVATIONS = ("sigmoid", "tanh", "relu", "rbf")
DISTRIBUTIONS = ("normal", "uniform")


def _check_dtype(dtype: str) -> None:
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")


def _x64():
    """float64 inside this block only (the rest of `dl` stays float32)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is not None:
        return enable(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


@dataclasses.dataclass(frozen=True)
class Hidden:
    """The random hidden layer: weights (d, L) and biases (L,), or for "rbf" the centres
    (d, L) and per-unit widths gamma (L,)."""

    weights: np.ndarray
    biases: np.ndarray
    activation: str


def init_hidden(
    key: jax.Array,
    in_dim: int,
    width: int,
    *,
    activation: str = "sigmoid",
    distribution: str = "normal",
    scale: float = 1.0,
) -> Hidden:
    """Draw the hidden layer from `key`.

    "normal": W ~ N(0, scale^2 / d); "uniform": W ~ U(-a, a) with the same variance;
    biases ~ N(0, scale^2) (or uniform). Inputs should be standardised (ELMClassifier
    does it). For "rbf", centres ~ N(0, 1) per feature (standardised inputs) and
    h = exp(-gamma ||x - c||^2) with gamma = 1 / (2 d scale^2).
    """
    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    if distribution not in DISTRIBUTIONS:
        raise unknown_name("weight distribution", distribution, DISTRIBUTIONS)
    in_dim, width = check_positive_int("in_dim", in_dim), check_positive_int("width", width)
    w, b = _draw_hidden(key, in_dim, width, activation, distribution, scale)
    return Hidden(np.asarray(w), np.asarray(b), activation)


def _draw_hidden(key, in_dim: int, width: int, activation: str, distribution: str, scale):
    """The hidden weights and biases (centres and gammas for "rbf"), pure: traceable."""
    kw, kb = jax.random.split(key)
    if activation == "rbf":
        centres = jax.random.normal(kw, (in_dim, width), jnp.float32)
        return centres, jnp.full((width,), 1.0 / (2.0 * in_dim * scale**2), jnp.float32)
    if distribution == "normal":
        w = jax.random.normal(kw, (in_dim, width), jnp.float32) * (scale / np.sqrt(in_dim))
        b = jax.random.normal(kb, (width,), jnp.float32) * scale
    else:
        a = np.sqrt(3.0) * scale
        w = jax.random.uniform(kw, (in_dim, width), jnp.float32, -a, a) / np.sqrt(in_dim)
        b = jax.random.uniform(kb, (width,), jnp.float32, -a, a)
    return w, b


_PREDICT_ROWS = 256  # rows per block of `_scores`


def _features(activation: str, w, b, x):
    if activation == "rbf":
        sq = jnp.sum(x * x, 1, keepdims=True) - 2 * x @ w + jnp.sum(w * w, 0)[None]
        return jnp.exp(-b[None] * jnp.maximum(sq, 0.0))
    z = x @ w + b
    if activation == "sigmoid":
        return jax.nn.sigmoid(z)
    if activation == "tanh":
        return jnp.tanh(z)
    return jax.nn.relu(z)


@functools.partial(jax.jit, static_argnums=0)
def _features_jit(activation, w, b, x):
    return _features(activation, w, b, x)


@functools.partial(jax.jit, static_argnums=0)
def _blocked_features(activation, w, b, blocks):
    """H of (nblocks, rows, d) blocks, one block after another (`lax.map`), in one call."""
    return jax.lax.map(lambda x: _features(activation, w, b, x), blocks)


def hidden_features(hidden: Hidden, x) -> jax.Array:
    """H = g(x W + b) (N, L), float32."""
    return _features_jit(hidden.activation, hidden.weights, hidden.biases, jnp.asarray(x))


def _batch_features(activation, dtype, htt, w, b, x, t, mask):
    """A batch's H (masked rows zero) in `dtype`, and H^T T added to `htt`."""
    h = (_features(activation, w, b, x) * mask[:, None]).astype(dtype)
    return h, htt + h.T @ t.astype(dtype)


# The host Gram path (`_host_gram`) takes H back; XLA's path adds H^T H itself.
_features_and_htt = jax.jit(_batch_features, static_argnums=(0, 1), donate_argnums=2)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _accumulate(activation, hth, htt, w, b, x, t, mask):
    h, htt = _batch_features(activation, hth.dtype, htt, w, b, x, t, mask)
    return hth + h.T @ h, htt


# At most this much memory for the host Gram's per-thread (L, L) partial sums.
_HOST_GRAM_BYTES = 1 << 30


def _host_gram(sharding, width: int, dtype: str) -> bool:
    """Form H^T H with NumPy on the host? On the CPU backend, `a.T @ a` in NumPy is
    BLAS's symmetric rank-k update (syrk: NumPy spots a product of an array with its own
    transpose and computes one triangle, half the FLOPs of a general product), which
    XLA:CPU has no counterpart for. H is read on the host without a copy. On other
    backends, or with the batch sharded over devices, XLA forms it where H lies; so it
    does where the threads' partial sums (one (L, L) matrix per core) would take more
    than `_HOST_GRAM_BYTES`."""
    partial_sums = _cpus() * width * width * np.dtype(dtype).itemsize
    return sharding is None and jax.default_backend() == "cpu" and partial_sums <= _HOST_GRAM_BYTES


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_syrk(h: np.ndarray) -> np.ndarray:
    """H^T H as a sum of syrk products of row blocks, one Python thread per core, each
    BLAS call on one thread (the caller holds `_one_blas_thread`; NumPy releases the GIL).

    Why not one syrk on OpenBLAS's own threads: they wait busily for work after a call,
    and XLA's threads, which compute the next H, share the cores with them
    (`experiments/benchmarks/elm_vs_hpelm.py`). The blocks are summed in a fixed order,
    so the result does not depend on thread timing."""
    blocks = [b for b in np.array_split(h, min(_cpus(), max(len(h) // 64, 1))) if len(b)]
    if len(blocks) == 1:
        return h.T @ h
    with ThreadPoolExecutor(len(blocks)) as pool:
        grams = list(pool.map(lambda b: b.T @ b, blocks))
    return functools.reduce(np.add, grams)


def gram(
    hidden: Hidden,
    x,
    t,
    *,
    batch_size: int | None = None,
    devices: int | None = None,
    mean=None,
    std=None,
    dtype: str = "float64",
):
    """H^T H (L, L) and H^T T (L, K), accumulated over batches of `x` in `dtype`.

    float64 by default. "float32" is several times faster on a CPU but rounds away
    eigenvalues near float32's relative precision (~1e-7 of the largest), so the ridge
    must be large enough to dominate them; `ELMClassifier(dtype="float32")` uses it.

    `x` and `t` may be numpy memory maps: only one batch at a time is on the device. The
    last batch is padded (masked rows contribute nothing) so every batch has one shape
    and the accumulation compiles once. With `devices=k`, each batch is split over the
    first k devices along the example axis. `mean` and `std` standardise each batch as
    it is read.
    """
    _check_dtype(dtype)
    n = len(x)
    batch_size = n if batch_size is None else min(check_positive_int("batch_size", batch_size), n)
    sharding = None
    if devices is not None and devices > 1:
        from dl.parallel import DATA_AXIS, make_mesh

        mesh = make_mesh(devices)
        if batch_size % devices:
            batch_size += devices - batch_size % devices  # each device the same rows
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))
    width = hidden.weights.shape[1]
    t = np.asarray(t, np.float32).reshape(n, -1)
    host = _host_gram(sharding, width, dtype)
    with _x64(), _one_blas_thread():
        hth = None if host else jnp.zeros((width, width), dtype)  # host: NumPy, summed below
        htt = jnp.zeros((width, t.shape[1]), dtype)
        for start in range(0, n, batch_size):
            xb = np.asarray(x[start : start + batch_size], np.float32).reshape(
                -1, hidden.weights.shape[0]
            )
            if mean is not None:
                xb = (xb - mean) / std
            tb = t[start : start + batch_size]
            m = len(xb)
            mask = np.zeros(batch_size, np.float32)
            mask[:m] = 1.0
            if m < batch_size:
                xb = np.concatenate([xb, np.zeros((batch_size - m, xb.shape[1]), np.float32)])
                tb = np.concatenate([tb, np.zeros((batch_size - m, tb.shape[1]), np.float32)])
            if sharding is not None:
                xb, tb, mask = (jax.device_put(a, sharding) for a in (xb, tb, mask))
            if host:
                h, htt = _features_and_htt(
                    hidden.activation, dtype, htt, hidden.weights, hidden.biases, xb, tb, mask
                )
                g = _host_syrk(np.asarray(h))
                hth = g if hth is None else hth + g
            else:
                hth, htt = _accumulate(
                    hidden.activation, hth, htt, hidden.weights, hidden.biases, xb, tb, mask
                )
        return np.asarray(hth), np.asarray(htt)


def _check_finite(beta, what: str, ridge: float):
    if not np.all(np.isfinite(beta)):
        raise FloatingPointError(
            f"The ELM's ridge solve ({what}) gave NaN/Inf output weights at ridge={ridge:g}: "
            "the system is not numerically positive definite. Increase the ridge (e.g. "
            "x10) or solve in float64 (dtype='float64')."
        )
    return beta


@jax.jit
def _cholesky_solve(a, rhs, ridge):
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    factor = jax.scipy.linalg.cho_factor(a + ridge * eye, lower=True)
    return jax.scipy.linalg.cho_solve(factor, rhs)


_blas_limit = threading.local()


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread inside this block (re-entrant: an inner block costs nothing).

    XLA:CPU's Cholesky calls LAPACK in SciPy's OpenBLAS. Run with OpenBLAS's threads,
    it slowed the computation after it (OpenBLAS's threads wait busily for more work);
    with one BLAS thread for the solve whole fits were faster
    (`experiments/benchmarks/elm_vs_hpelm.py`). threadpoolctl restores the thread
    count afterwards. The host Gram matrix (`_host_syrk`) runs its BLAS calls inside it
    as well."""
    # threadpoolctl finds the loaded BLAS libraries afresh each time (a few ms): a
    # controller cached at the first solve missed libraries loaded after it (a test saw
    # one of two OpenBLAS copies left at 2 threads). A fit takes the limit once, around
    # both its Gram matrix and its solve.
    if getattr(_blas_limit, "held", False):
        yield
        return
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        _blas_limit.held = True
        try:
            yield
        finally:
            _blas_limit.held = False


def solve_primal(hth, htt, ridge: float, *, dtype: str = "float64") -> np.ndarray:
    """beta = (H^T H + ridge I)^-1 H^T T by Cholesky (L x L)."""
    with _x64(), _one_blas_thread():
        beta = _cholesky_solve(
            jnp.asarray(hth, dtype), jnp.asarray(htt, dtype), jnp.asarray(ridge, dtype)
        )
        return _check_finite(np.asarray(beta), "primal", ridge)


def solve_dual(h, t, ridge: float, *, dtype: str = "float64") -> np.ndarray:
    """beta = H^T (H H^T + ridge I)^-1 T by Cholesky (N x N): cheaper when L > N."""
    with _x64(), _one_blas_thread():
        h = jnp.asarray(h, dtype)
        alpha = _cholesky_solve(h @ h.T, jnp.asarray(t, dtype), jnp.asarray(ridge, dtype))
        return _check_finite(np.asarray(h.T @ alpha), "dual", ridge)


@jax.jit
def _path(h, t, ridges):
    u, s, _ = jnp.linalg.svd(h, full_matrices=False)
    utt = u.T @ t
    s2 = s * s

    def one(lam):
        f = s2 / (s2 + lam)
        fitted = u @ (f[:, None] * utt)
        diag = jnp.sum(u * u * f[None], axis=1)  # diagonal of the hat matrix
        resid = t - fitted
        loo_resid = resid / (1.0 - diag)[:, None]
        n = t.shape[0]
        gcv = jnp.mean(resid**2) / (1.0 - jnp.sum(diag) / n) ** 2
        loo_pred = t - loo_resid
        loo_err = jnp.mean(jnp.argmax(loo_pred, 1) != jnp.argmax(t, 1))
        return gcv, jnp.mean(loo_resid**2), loo_err

    return jax.vmap(one)(ridges)


def ridge_path(h, t, ridges: Sequence[float]) -> dict[str, np.ndarray]:
    """GCV and exact leave-one-out errors of ridge regression H beta ~ T for every value
    in `ridges`, from one thin SVD of H (float64).

    Returns {"ridge", "gcv", "loo_mse", "loo_error"}; loo_error is the leave-one-out
    misclassification rate when T holds one-hot or +-1 class targets.
    """
    ridges = np.asarray(ridges, np.float64)
    if ridges.ndim != 1 or len(ridges) == 0 or np.any(ridges <= 0):
        raise ValueError(f"ridges must be a non-empty list of positive numbers; got {ridges}.")
    with _x64():
        t = jnp.asarray(np.asarray(t, np.float64).reshape(len(h), -1))
        gcv, loo_mse, loo_err = _path(jnp.asarray(h, jnp.float64), t, jnp.asarray(ridges))
        return {
            "ridge": ridges,
            "gcv": np.asarray(gcv),
            "loo_mse": np.asarray(loo_mse),
            "loo_error": np.asarray(loo_err),
        }


def _check_labels(y: np.ndarray) -> None:
    """Class labels: integers, strings or booleans; not fractions, NaN or complex numbers
    (each of which np.unique would turn into classes of its own)."""
    if np.iscomplexobj(y):
        raise ValueError(f"y holds complex numbers (dtype {y.dtype}); labels must be class ids.")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"y must hold class labels, but {int(bad.sum())} value(s) are continuous, "
                f"not whole numbers (first y[{i}] = {y[i].item()!r}). For real-valued "
                "targets use ELMRegressor."
            )


def _targets(y, classes: np.ndarray, kind: str) -> np.ndarray:
    onehot = (np.asarray(y)[:, None] == classes[None]).astype(np.float32)
    return onehot if kind == "one_hot" else 2.0 * onehot - 1.0


def _nonfinite_error(where: str) -> ValueError:
    return ValueError(
        f"x contains NaN or Inf ({where}); clean the inputs (e.g. np.nan_to_num or drop "
        "those examples) before fitting."
    )


@jax.jit
def _moments(x):
    """Feature means and standard deviations in float64 (call under `_x64`), as the
    streaming path computes them. In XLA rather than NumPy, whose float64 `std` of a
    float32 array was a noticeable part of a fit; XLA reads x once for the mean and
    once for the std."""
    x = x.astype(jnp.float64)
    mean = jnp.mean(x, 0)
    return mean, jnp.sqrt(jnp.mean(jnp.square(x - mean), 0))


class _ELMBase(BaseEstimator):
    """Shared fit machinery; see ELMClassifier for the parameters.

    A scikit-learn estimator: the constructor stores its arguments as given, `fit`
    validates them (so `clone`, `set_params` and grid searches work as for any
    scikit-learn model)."""

    # scikit-learn reads an estimator's parameters from its __init__ signature
    # (get_params, clone; no **kwargs) and wants them stored unchanged: ELMRegressor
    # inherits this one, ELMClassifier adds `targets` to it.
    def __init__(
        self,
        width: int = 1000,
        ridge: float = 1e-3,
        *,
        activation: str = "sigmoid",
        distribution: str = "normal",
        scale: float = 1.0,
        solver: str = "auto",
        batch_size: int | None = None,
        devices: int | None = None,
        standardize: bool = True,
        dtype: str = "float64",
        seed: int = 0,
    ):
        self.width, self.ridge = width, ridge
        self.activation, self.distribution, self.scale = activation, distribution, scale
        self.solver, self.batch_size, self.devices = solver, batch_size, devices
        self.standardize, self.dtype, self.seed = standardize, dtype, seed

    def _validate_params(self) -> None:
        check_positive_int("width", self.width)
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, int | float):
            raise ValueError(f"ridge must be a positive number; got {self.ridge!r}.")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0; got {self.ridge!r}.")
        if self.solver not in ("auto", "primal", "dual"):
            raise ValueError(f"solver must be 'auto', 'primal' or 'dual'; got {self.solver!r}.")
        if self.solver == "dual" and self.batch_size is not None:
            raise ValueError("The dual solve needs all of H at once; stream with solver='primal'.")
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        check_seed(self.seed)
        _check_dtype(self.dtype)
        if self.activation not in ACTIVATIONS:
            raise unknown_name("activation", self.activation, ACTIVATIONS)
        if self.distribution not in DISTRIBUTIONS:
            raise unknown_name("weight distribution", self.distribution, DISTRIBUTIONS)

    def _prepare(self, x, fit: bool) -> np.ndarray:
        if np.iscomplexobj(x):
            raise ValueError(
                f"x holds complex numbers (dtype {np.asarray(x).dtype}); the ELM needs real "
                "features: pass .real, np.abs() or both."
            )
        x = np.asarray(x, np.float32)
        x = x.reshape(len(x), -1)
        if fit:
            if len(x) == 0:
                raise ValueError("Cannot fit an ELM on an empty dataset (0 examples).")
            with _x64():
                mean, std = (np.asarray(a) for a in _moments(x))
            # A NaN or an Inf anywhere in a column makes its mean or std non-finite (the
            # float64 sums of float32 values cannot overflow), so this checks all of x.
            bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
            if len(bad):
                raise _nonfinite_error(f"in feature(s) {bad[:5].tolist()}")
            if not self.standardize:
                mean, std = np.zeros_like(mean), np.ones_like(std)
            self.mean_ = mean.astype(np.float32)
            self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        else:
            if x.shape[1] != self.mean_.shape[0]:
                raise ValueError(
                    f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.mean_.shape[0]} features as input (the number it was fitted on)."
                )
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if len(bad):
                raise ValueError(
                    f"x contains NaN or infinity in {len(bad)} example(s), first at index "
                    f"{bad[0]}; clean the inputs before predicting."
                )
        return (x - self.mean_) / self.std_

    def _stream_stats(self, x) -> None:
        """Feature means and stds from one pass over batches (x may be a memory map)."""
        n, total, total_sq = len(x), 0.0, 0.0
        if n == 0:
            raise ValueError("Cannot fit an ELM on an empty dataset (0 examples).")
        for start in range(0, n, self.batch_size):
            xb = np.asarray(x[start : start + self.batch_size], np.float64).reshape(-1, self._dim)
            if not np.all(np.isfinite(xb)):
                row, col = np.argwhere(~np.isfinite(xb))[0]
                raise _nonfinite_error(f"first at example {start + row}, feature {col}")
            total, total_sq = total + xb.sum(0), total_sq + (xb * xb).sum(0)
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
        if not self.standardize:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        self.mean_ = mean.astype(np.float32)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)

    def memory_estimate(self, n: int, d: int) -> int:
        """Bytes a fit on n examples of d features needs at its peak, roughly: the hidden
        weights, the hidden features H (a batch of them when streaming), and the L x L
        Gram matrices (primal) or the N x N kernel (dual) in the solve's dtype with their
        factorisations."""
        width, item = self.width, 8 if self.dtype == "float64" else 4
        weights = 3 * 4 * d * width  # drawn by JAX, copied to NumPy
        solver = self.solver
        if solver == "auto":
            solver = "dual" if width > n and self.batch_size is None else "primal"
        if solver == "dual":
            return weights + (4 + item) * n * width + 3 * item * n * n
        rows = n if self.batch_size is None else min(n, self.batch_size)
        return weights + (4 + item) * rows * width + 4 * item * width * width

    def _check_memory(self, n: int, d: int) -> None:
        need, have = self.memory_estimate(n, d), available_memory()
        if have is not None and need > have:
            raise ValueError(
                f"An ELM of width {self.width} on {n} examples of {d} features needs about "
                f"{format_bytes(need)} of memory; {format_bytes(have)} is available. Use a "
                "smaller width"
                + (", or batch_size= to stream the data (primal solve)" if n > 1 else "")
                + "."
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "beta_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(x, y) before predicting."
            )

    def _fit_targets(self, x, t) -> None:
        t0 = time.perf_counter()
        self._dim = int(np.prod(np.shape(x)[1:]))
        self.n_features_in_ = self._dim
        self._check_memory(len(x), self._dim)
        if self.batch_size is not None:  # stream: never hold all of x in memory
            self._stream_stats(x)
            mean, std = self.mean_, self.std_
        else:
            x = self._prepare(x, fit=True)
            mean = std = None
        n = len(x)
        self.hidden_ = init_hidden(
            jax.random.key(self.seed),
            self._dim,
            self.width,
            activation=self.activation,
            distribution=self.distribution,
            scale=self.scale,
        )
        with _one_blas_thread():
            self._solve(x, t, n, mean, std)
        self.fit_time_s_ = time.perf_counter() - t0

    def _solve(self, x, t, n, mean, std) -> None:
        solver = self.solver
        if solver == "auto":
            solver = "dual" if self.width > n and self.batch_size is None else "primal"
        if solver == "dual":
            self.beta_ = solve_dual(
                hidden_features(self.hidden_, x), t, self.ridge, dtype=self.dtype
            )
        else:
            hth, htt = gram(
                self.hidden_,
                x,
                t,
                batch_size=self.batch_size,
                devices=self.devices,
                mean=mean,
                std=std,
                dtype=self.dtype,
            )
            self.beta_ = solve_primal(hth, htt, self.ridge, dtype=self.dtype)
        self.solver_ = solver

    def _scores(self, x) -> np.ndarray:
        """H(x) beta: (N, K) scores (class scores or regression outputs)."""
        self._check_fitted()
        x = np.asarray(self._prepare(_check_x(x), fit=False), np.float32)
        # In blocks of a fixed number of rows (the last padded), so that an example's
        # scores do not depend on how many others are scored with it: XLA:CPU's float32
        # matmul rounds differently for different row counts (seen with jaxlib 0.7).
        n, rows = len(x), _PREDICT_ROWS
        padded = np.zeros((-(-n // rows) * rows, x.shape[1]), np.float32)
        padded[:n] = x
        hid = self.hidden_
        h = _blocked_features(
            hid.activation, hid.weights, hid.biases, padded.reshape(-1, rows, x.shape[1])
        )
        return np.asarray(h, np.float64).reshape(-1, h.shape[-1])[:n] @ self.beta_


_COMMON_DOC = """
    Args:
      width: hidden units L.
      ridge: the ridge (L2) penalty on the output weights (> 0).
      activation: "sigmoid", "tanh", "relu" or "rbf".
      distribution: "normal" or "uniform" hidden weights; `scale` their spread.
      solver: "primal" (L x L), "dual" (N x N) or "auto" (dual when L > N in memory).
      batch_size: stream the data in batches of this size (primal only).
      devices: split each batch over this many devices.
      standardize: standardise the features with the training mean and std.
      dtype: "float64" (default) or "float32" for the Gram matrices and the solve
        (faster; NaN weights from a too-small ridge raise an error).
      seed: seed of the hidden layer: the same seed gives bitwise the same weights."""


class ELMClassifier(ClassifierMixin, _ELMBase):
    """ELM classifier, a scikit-learn estimator (`fit`, `predict`, `predict_proba`,
    `decision_function`, `score`; `clone`, pipelines and grid searches work). `targets`:
    "one_hot" (0/1) or "pm1" (+-1) class targets. For the same pure computation under
    `jax.jit` and `jax.vmap`, see `elm_fit` and `elm_apply`.
    """

    def __init__(
        self,
        width: int = 1000,
        ridge: float = 1e-3,
        *,
        targets: str = "one_hot",
        activation: str = "sigmoid",
        distribution: str = "normal",
        scale: float = 1.0,
        solver: str = "auto",
        batch_size: int | None = None,
        devices: int | None = None,
        standardize: bool = True,
        dtype: str = "float64",
        seed: int = 0,
    ):
        super().__init__(
            width, ridge, activation=activation, distribution=distribution, scale=scale,
            solver=solver, batch_size=batch_size, devices=devices, standardize=standardize,
            dtype=dtype, seed=seed,
        )  # fmt: skip
        self.targets = targets

    def fit(self, x, y) -> ELMClassifier:
        self._validate_params()
        _check_y_given(self, y)
        if self.targets not in ("one_hot", "pm1"):
            raise ValueError(f"targets must be 'one_hot' or 'pm1'; got {self.targets!r}.")
        x = _check_x(x, streaming=self.batch_size is not None)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:  # a column: warn as scikit-learn does
            from sklearn.utils.validation import column_or_1d

            y = column_or_1d(y, warn=True)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"y must hold one label per example, shape ({len(x)},); got {y.shape}."
            )
        _check_labels(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y holds only 1 class ({self.classes_.tolist()}); a classifier needs at least two."
            )
        self._fit_targets(x, _targets(y, self.classes_, self.targets))
        _progress.ran("elm")
        return self

    def decision_function(self, x) -> np.ndarray:
        """The ridge scores: (N, K) for K > 2 classes; for two classes, as scikit-learn's
        binary classifiers do, (N,) = score of classes_[1] minus that of classes_[0]."""
        s = self._scores(x)
        return s[:, 1] - s[:, 0] if len(self.classes_) == 2 else s

    def predict_proba(self, x) -> np.ndarray:
        """(N, K) class probabilities: a softmax of the ridge scores. The argmax is
        `predict`'s; the values are not calibrated (wrap the model in scikit-learn's
        `CalibratedClassifierCV` where calibrated probabilities matter)."""
        s = self._scores(x)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x) -> np.ndarray:
        scores = self._scores(x)  # first: it checks that the model is fitted
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, x, y, sample_weight=None) -> float:
        """Accuracy (scikit-learn's `ClassifierMixin.score`)."""
        return float(super().score(x, y, sample_weight=sample_weight))


class ELMRegressor(RegressorMixin, _ELMBase):
    """ELM regressor, a scikit-learn estimator; the parameters of ELMClassifier but
    `targets`. `score` is R^2."""

    def fit(self, x, y) -> ELMRegressor:
        self._validate_params()
        _check_y_given(self, y)
        x = _check_x(x, streaming=self.batch_size is not None)
        y = np.asarray(y)
        if y.dtype.kind == "c":
            raise ValueError(f"y holds complex numbers (dtype {y.dtype}); pass .real.")
        y = y.astype(np.float32)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(f"y must hold one target per example ({len(x)}); got shape {y.shape}.")
        bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
        if len(bad):
            raise ValueError(
                f"y holds NaN or infinite targets in {len(bad)} example(s), first at index "
                f"{bad[0]}; drop or impute them before fitting."
            )
        self.output_shape_ = y.shape[1:]
        self._fit_targets(x, y.reshape(len(y), -1))
        _progress.ran("elm")
        return self

    def predict(self, x) -> np.ndarray:
        out = self._scores(x)
        return out.reshape(len(out), *self.output_shape_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (N, outputs) is fitted jointly
        return tags


ELMClassifier.__doc__ += _COMMON_DOC
ELMRegressor.__doc__ += _COMMON_DOC


def _check_x(x, streaming: bool = False):
    """x as an array scikit-learn would accept (sparse matrices and strings refused with
    its messages); a memory map or other array-like being streamed is left as it is."""
    if streaming:
        return x
    from sklearn.utils.validation import check_array

    # Complex input is refused here too ("Complex data not supported").
    return check_array(x, allow_nd=True, dtype=None, ensure_all_finite=False)


def _check_y_given(estimator, y) -> None:
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None."
        )


# ------------------------------------------------------------------ the functional core


@flax.struct.dataclass
class ELMParams:
    """What `elm_fit` returns and `elm_apply` reads: a pytree (so it passes through
    `jax.jit` and `jax.vmap`), with the activation as static metadata."""

    mean: jax.Array  # (d,) feature means (zeros without standardisation)
    std: jax.Array  # (d,) feature stds, 1 where a feature is constant
    w: jax.Array  # (d, L) hidden weights (RBF centres)
    b: jax.Array  # (L,) hidden biases (RBF gammas)
    beta: jax.Array  # (L, K) output weights
    activation: str = flax.struct.field(pytree_node=False, default="sigmoid")


def elm_fit(
    key: jax.Array,
    x,
    targets,
    *,
    width: int,
    ridge: float,
    activation: str = "sigmoid",
    distribution: str = "normal",
    scale: float = 1.0,
    standardize: bool = True,
) -> ELMParams:
    """Fit an ELM as a pure function: usable under `jax.jit` (with `width` and the
    names static) and `jax.vmap` over keys (many hidden layers at once).

    `x` (N, ...) are the inputs, `targets` (N, K) what the output layer regresses onto
    (one-hot rows for classes: `jax.nn.one_hot(y, K)`). The hidden layer drawn from
    `key` is bitwise the one `ELMClassifier(seed=s)` draws from `jax.random.key(s)`;
    with `jax_enable_x64` the moments and the ridge solve run in float64 as the
    estimator's do and `beta` agrees with its own to about 1e-5 (the float32 hidden
    features come out of another compiled program); without it they run in
    float32 (the predictions agree, the weights to float32's precision of an
    ill-conditioned solve). The solve is the primal (L x L) one, or the dual (N x N) one
    when L > N, as the estimator's "auto".
    """
    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    if distribution not in DISTRIBUTIONS:
        raise unknown_name("weight distribution", distribution, DISTRIBUTIONS)
    width = check_positive_int("width", width)
    x = jnp.asarray(x, jnp.float32)
    x = x.reshape(x.shape[0], -1)
    t = jnp.asarray(targets, jnp.float32)
    if t.ndim != 2 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"targets must be (N, K) with N = {x.shape[0]} rows of x; got shape {t.shape}."
        )
    n, d = x.shape
    # float64 where JAX has it (jax_enable_x64), as the estimator's moments and solve;
    # float32 otherwise. The hidden features are float32 either way, as the estimator's.
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)
    if standardize:
        xw = x.astype(wide)
        mean, std = xw.mean(0), xw.std(0)
        mean, std = mean.astype(jnp.float32), jnp.where(std > 1e-8, std, 1.0).astype(jnp.float32)
    else:
        mean, std = jnp.zeros((d,), jnp.float32), jnp.ones((d,), jnp.float32)
    w, b = _draw_hidden(key, d, width, activation, distribution, scale)
    h = _features(activation, w, b, (x - mean) / std).astype(wide)
    t = t.astype(wide)
    if width > n:  # dual: beta = H^T (H H^T + ridge I)^-1 T
        alpha = _cho_solve(h @ h.T + ridge * jnp.eye(n, dtype=wide), t)
        beta = h.T @ alpha
    else:  # primal: beta = (H^T H + ridge I)^-1 H^T T
        beta = _cho_solve(h.T @ h + ridge * jnp.eye(width, dtype=wide), h.T @ t)
    return ELMParams(mean=mean, std=std, w=w, b=b, beta=beta, activation=activation)


def _cho_solve(a, rhs):
    """a^-1 rhs for a symmetric positive definite `a` (the ridge keeps it so)."""
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), rhs)


def elm_apply(params: ELMParams, x) -> jax.Array:
    """(N, K) scores of the ELM `params` on `x` (argmax: the class); pure."""
    x = jnp.asarray(x, jnp.float32)
    x = (x.reshape(x.shape[0], -1) - params.mean) / params.std
    h = _features(params.activation, params.w, params.b, x)
    return h.astype(params.beta.dtype) @ params.beta


def select(
    x,
    y,
    *,
    widths: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    ridges: Sequence[float] = tuple(10.0**k for k in range(-6, 3)),
    folds: int = 5,
    seed: int = 0,
    **elm_kwargs,
) -> dict[str, Any]:
    """k-fold cross-validation of width x ridge for an ELMClassifier.

    For each width the hidden layer is drawn once; each fold's thin SVD of its training
    rows gives the validation predictions for every ridge at once. Returns {"width",
    "ridge", "cv_accuracy" (the best), "table": (len(widths), len(ridges)) mean fold
    accuracies}.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    probe = ELMClassifier(widths[0], ridges[0], seed=seed, **elm_kwargs)
    xs = probe._prepare(x, fit=True)
    classes = np.unique(y)
    t = _targets(y, classes, probe.targets)
    split = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(xs, y))
    table = np.zeros((len(widths), len(ridges)))
    lams = np.asarray(ridges, np.float64)
    for i, width in enumerate(widths):
        hidden = init_hidden(
            jax.random.key(seed),
            xs.shape[1],
            width,
            activation=probe.activation,
            distribution=probe.distribution,
            scale=probe.scale,
        )
        h = np.asarray(hidden_features(hidden, xs), np.float64)
        for tr, va in split:
            with _x64():
                preds = _fold_predictions(
                    jnp.asarray(h[tr]), jnp.asarray(t[tr], jnp.float64), jnp.asarray(h[va]), lams
                )
            table[i] += np.mean(np.asarray(preds) == _index(y[va], classes)[None], axis=1)
    table /= folds
    wi, ri = np.unravel_index(np.argmax(table), table.shape)
    return {
        "width": int(widths[wi]),
        "ridge": float(ridges[ri]),
        "cv_accuracy": float(table[wi, ri]),
        "table": table,
        "widths": list(widths),
        "ridges": list(ridges),
    }


def _index(y, classes):
    return np.searchsorted(classes, y)


@jax.jit
def _fold_predictions(h_tr, t_tr, h_va, lams):
    u, s, vt = jnp.linalg.svd(h_tr, full_matrices=False)
    utt = u.T @ t_tr
    proj = h_va @ vt.T  # (n_va, r)

    def one(lam):
        beta_coef = (s / (s * s + lam))[:, None] * utt  # beta = V diag(s/(s^2+l)) U^T T
        return jnp.argmax(proj @ beta_coef, axis=1)

    return jax.vmap(one)(lams)
