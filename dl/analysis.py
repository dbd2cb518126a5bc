"""Representation analysis: what each layer of a trained network computes.

- `activations`: every layer's output for a dataset (the modules' `sow` calls, or Flax's
  `capture_intermediates` for modules without them);
- `linear_probe`: a frozen, standardised layer read out by an L2-regularised softmax
  (optax L-BFGS), scored on held-out data (Alain & Bengio 2016); `select_probe` chooses
  the L2 strength on a validation split; `random_projection` maps layers of different
  widths to one width;
- `linear_cka` / `cka_matrix`: linear CKA and its debiased estimator (Kornblith et al.
  2019; Song et al. 2012's unbiased HSIC);
- `gabor_fit`: how well 1-D or 2-D Gabor functions fit first-layer filters (R^2);
- `receptive_fields` / `cnn_receptive_fields`: theoretical receptive field per layer;
  `effective_receptive_field`: Luo et al. 2016's gradient map of a centre unit;
- `top_patches`: the input patches that excite each channel most;
- `train_frozen`: training with some layers copied from another network and frozen, the
  building block of transfer by layer (Yosinski et al. 2014).

Everything takes a Flax module and its variables (or a `dl.train.TrainState`), so it works
on any model, not only the zoo's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dl.models import mode_kwargs
from dl.optim import freeze, param_labels  # noqa: F401  (re-exported: dl.analysis API)

# ----------------------------------------------------------------------------- activations


def _variables(state_or_variables) -> dict[str, Any]:
    if hasattr(state_or_variables, "params"):  # a dl.train.TrainState
        v = {"params": state_or_variables.params}
        if state_or_variables.batch_stats:
            v["batch_stats"] = state_or_variables.batch_stats
        return v
    return dict(state_or_variables)


def _flatten_collection(tree, prefix: str = "") -> dict[str, jax.Array]:
    out: dict[str, jax.Array] = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten_collection(v, name))
        else:  # sow stores a tuple of values; capture_intermediates uses "__call__"
            out[name.removesuffix("/__call__")] = v[-1]
    return out


def activations(
    model: nn.Module,
    variables,
    x,
    *,
    batch_size: int = 512,
    include_input: bool = True,
    layers: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every layer's output for inputs `x`, in inference mode.

    The layers are what the model `sow`s into its "intermediates" collection (the zoo's
    CNN: each block after pooling, then each hidden Dense; the MLP: each hidden layer).
    A model that sows nothing falls back to Flax's `capture_intermediates`: the output of
    every submodule.

    Args:
      model: a Linen module called as `model(x, train=False)`.
      variables: its variables, or a `dl.train.TrainState`.
      x: inputs (N, ...).
      batch_size: examples per compiled call.
      include_input: put the input itself first, under "input".
      layers: keep only these layers (names as returned without it), e.g. a ResNet's
        stage outputs out of every submodule that `capture_intermediates` records; the
        others are never copied out of the compiled call.

    Returns:
      {layer name: array (N, ...)} in the order the layers ran.
    """
    v = _variables(variables)
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("activations needs at least one example; got an empty array.")

    def run(xb, capture):
        _, mutated = model.apply(
            v,
            xb,
            mutable=["intermediates"],
            capture_intermediates=capture,
            **mode_kwargs(model, False),
        )
        return _flatten_collection(mutated.get("intermediates", {}))

    def chosen(xb, capture):
        out = run(xb, capture)
        if layers is None:
            return out
        missing = [name for name in layers if name not in out]
        if missing:
            raise ValueError(f"Unknown layer(s) {missing}; the model's layers are {list(out)}.")
        return {name: out[name] for name in layers}

    probe = jax.eval_shape(lambda xb: run(xb, False), x[:1])
    fn = jax.jit(lambda xb: chosen(xb, not probe))
    parts: list[dict[str, jax.Array]] = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        pad = batch_size - len(xb) if len(x) > batch_size else 0
        if pad:  # one compiled shape for every batch
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        parts.append({k: np.asarray(a)[: len(xb) - pad] for k, a in fn(xb).items()})
    out = {"input": x} if include_input else {}
    for k in parts[0]:
        out[k] = np.concatenate([p[k] for p in parts])
    return out


# ---------------------------------------------------------------------------- linear probe


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    train_accuracy: float
    test_accuracy: float
    l2: float
    features: int


def _standardise(train: np.ndarray, test: np.ndarray):
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-6, std, 1.0)  # constant features (dead units) stay at 0
    return (train - mean) / std, (test - mean) / std


def linear_probe(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    l2: float = 1e-3,
    steps: int = 200,
    num_classes: int | None = None,
) -> ProbeResult:
    """Fit a linear softmax read-out on frozen features; score it on held-out data.

    Features are flattened and standardised with the training mean and std. The
    objective is the mean cross-entropy plus `l2/2 * ||W||^2`, minimised by optax's
    L-BFGS with a zoom line search for `steps` iterations (the problem is convex, so this
    is a fit, not a training schedule to tune).

    Args:
      train, test: (features (N, ...), integer labels (N,)).
      l2: weight of the L2 penalty on the weights (not the bias).
      steps: L-BFGS iterations.
      num_classes: default max label + 1.

    Returns:
      `ProbeResult` with train and test accuracy.
    """
    (x, y), (xt, yt) = train, test
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    xt = np.asarray(xt, np.float32).reshape(len(xt), -1)
    y, yt = np.asarray(y), np.asarray(yt)
    if len(x) != len(y) or len(xt) != len(yt):
        raise ValueError(
            f"features and labels differ in length: train {len(x)} vs {len(y)}, "
            f"test {len(xt)} vs {len(yt)}."
        )
    if x.shape[1] != xt.shape[1]:
        raise ValueError(f"train has {x.shape[1]} features but test has {xt.shape[1]}.")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0; got {l2}.")
    k = int(num_classes or max(y.max(), yt.max()) + 1)
    x, xt = _standardise(x, xt)
    w = _fit_softmax_jit(jnp.asarray(x), jnp.asarray(y, jnp.int32), k, float(l2), int(steps))

    def accuracy(f, labels):
        return float(np.mean(np.argmax(f @ np.asarray(w["w"]) + np.asarray(w["b"]), 1) == labels))

    return ProbeResult(accuracy(x, y), accuracy(xt, yt), float(l2), int(x.shape[1]))


def random_projection(x, dim: int, *, seed: int = 0) -> np.ndarray:
    """(N, ...) features mapped to (N, dim) by a fixed Gaussian matrix (entries of
    variance 1/dim), the same matrix for the same input width, `dim` and `seed`.

    Probes of layers of different widths then have the same number of inputs, so their
    accuracies compare layers rather than widths: pairwise distances are kept to within
    a factor 1 +- eps when dim is about 8 log(N) / eps^2 (Johnson-Lindenstrauss), and a
    narrower layer is embedded without loss.
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if dim < 1:
        raise ValueError(f"dim must be >= 1; got {dim}.")
    rng = np.random.default_rng([seed, x.shape[1], dim])
    m = rng.normal(0.0, 1.0 / math.sqrt(dim), (x.shape[1], dim)).astype(np.float32)
    return x @ m


def select_probe(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    l2s: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    val_fraction: float = 0.2,
    seed: int = 0,
    steps: int = 200,
    num_classes: int | None = None,
) -> ProbeResult:
    """`linear_probe` with its L2 strength chosen on a validation split held out of
    `train` (a random `val_fraction` of it), then refit on the whole of `train` and
    scored on `test`; the test set never informs the choice."""
    x, y = np.asarray(train[0]), np.asarray(train[1])
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}.")
    n_val = max(1, int(round(val_fraction * len(x))))
    if len(x) - n_val < 2:
        raise ValueError(f"select_probe needs more training examples; got {len(x)}.")
    k = int(num_classes or max(y.max(), np.max(test[1])) + 1)
    order = np.random.default_rng(seed).permutation(len(x))
    fit_idx, val_idx = order[n_val:], order[:n_val]
    scores = [
        linear_probe(
            (x[fit_idx], y[fit_idx]), (x[val_idx], y[val_idx]), l2=l2, steps=steps, num_classes=k
        ).test_accuracy
        for l2 in l2s
    ]
    best = float(l2s[int(np.argmax(scores))])  # the smallest strength among ties
    return linear_probe(train, test, l2=best, steps=steps, num_classes=k)


@functools.partial(jax.jit, static_argnames=("k", "steps"))
def _fit_softmax_jit(x, y, k, l2, steps):
    """Full-batch L-BFGS on the L2-regularised softmax cross-entropy."""

    def loss(p):
        logits = x @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    params = {"w": jnp.zeros((x.shape[1], k)), "b": jnp.zeros((k,))}
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def body(_, carry):
        p, s = carry
        value, grad = value_and_grad(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), s

    params, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
    return params


# ------------------------------------------------------------------------ gradient norms


def layer_gradient_norms(
    model: nn.Module,
    variables,
    x,
    y,
    *,
    layers: Sequence[str],
    loss: str = "cross_entropy",
    jit: bool = True,
    stacked: bool = False,
) -> np.ndarray:
    """L2 norm of the loss gradient with respect to each named layer's kernel.

    The loss is the batch mean of `loss` ("cross_entropy" with integer labels, or "mse")
    with the model in training mode (BatchNorm uses the batch's statistics, as it does
    when training; dropout is off).

    Args:
      model, variables: the network (variables or a TrainState).
      x, y: one batch.
      layers: top-level module names holding a "kernel", input to output.
      loss: "cross_entropy" or "mse".
      jit: compile the gradient (cached per model and loss); False runs it op by op,
        cheaper for a one-off measurement of a deep model.
      stacked: the variables have a leading axis, one entry per run (e.g. the states of
        `dl.train.train_seeds`); all runs are measured at once with `jax.vmap`.

    Returns:
      (len(layers),) gradient norms, or (runs, len(layers)) when `stacked`.
    """
    v = _variables(variables)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(f"loss must be 'cross_entropy' or 'mse'; got {loss!r}.")
    missing = [name for name in layers if name not in v["params"]]
    if missing:
        raise ValueError(f"Unknown layer(s) {missing}; the model has {sorted(v['params'])}.")

    fn = _gradient_fn(model, loss, jit)

    def norms(variables):
        grads = fn(variables, x, y)
        return jnp.stack([jnp.linalg.norm(grads[name]["kernel"]) for name in layers])

    return np.asarray(jax.vmap(norms)(v) if stacked else norms(v), np.float64)


@functools.lru_cache(maxsize=32)
def _gradient_fn(model: nn.Module, loss: str, jit: bool):
    """The parameter gradient of a model's batch loss, compiled once per (model, loss) when
    `jit` (for repeated measurements during training), else run op by op."""

    def grads(variables, x, y):
        def objective(params):
            out, _ = model.apply(
                {**variables, "params": params},
                x,
                mutable=["batch_stats"],
                **mode_kwargs(model, True),
            )
            if loss == "mse":
                return jnp.mean((out - y.reshape(out.shape)) ** 2)
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

        return jax.grad(objective)(variables["params"])

    return jax.jit(grads) if jit else grads


# ------------------------------------------------------------------------------------- CKA


def _gram(x) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x @ x.T


def _center(k: np.ndarray) -> np.ndarray:
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012's unbiased HSIC estimator (needs n >= 4)."""
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    kl = k @ l
    return float(
        (np.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 * kl.sum() / (n - 2))
        / (n * (n - 3))
    )


def _cka_from_grams(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    if debiased:
        kl, kk, ll = _hsic_unbiased(k, l), _hsic_unbiased(k, k), _hsic_unbiased(l, l)
    else:
        kc, lc = _center(k), _center(l)
        kl, kk, ll = float(np.sum(kc * lc)), float(np.sum(kc * kc)), float(np.sum(lc * lc))
    if kk <= 0 or ll <= 0:
        return float("nan")  # a constant representation has no similarity structure
    return kl / math.sqrt(kk * ll)


def linear_cka(x, y, *, debiased: bool = False) -> float:
    """Linear centred kernel alignment between two representations of the same examples.

    CKA(X, Y) = HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)) on features
    flattened to (N, D). It is 1 for identical representations and invariant to
    orthogonal transforms and isotropic scaling, but not to arbitrary invertible linear
    maps (Kornblith et al. 2019). The plain estimator is biased upwards for N not much
    larger than D; `debiased=True` uses the unbiased HSIC, near 0 for independent data.

    Args:
      x, y: arrays with the same first axis N (N >= 4 for the debiased estimator).
      debiased: use Song et al. 2012's unbiased HSIC estimator.

    Returns:
      The similarity, a float (NaN when one representation is constant).
    """
    if len(x) != len(y):
        raise ValueError(f"CKA compares the same examples; got {len(x)} and {len(y)} rows.")
    if debiased and len(x) < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples; got {len(x)}.")
    return _cka_from_grams(_gram(x), _gram(y), debiased)


def one_hot(labels, num_classes: int | None = None) -> np.ndarray:
    """Labels as a one-hot representation, for CKA against the labels."""
    labels = np.asarray(labels)
    k = int(num_classes or labels.max() + 1)
    return np.eye(k)[labels]


def cka_matrix(
    a: Mapping[str, Any], b: Mapping[str, Any] | None = None, *, debiased: bool = False
) -> np.ndarray:
    """CKA between every layer of `a` and every layer of `b` (default `a` itself).

    Args:
      a, b: {layer name: activations (N, ...)} on the same N examples (see `activations`).
      debiased: use the debiased estimator.

    Returns:
      (len(a), len(b)) matrix; entry (i, j) compares layer i of `a` with layer j of `b`.
    """
    b = a if b is None else b
    ga = [_gram(v) for v in a.values()]
    gb = ga if b is a else [_gram(v) for v in b.values()]
    return np.array([[_cka_from_grams(k, l, debiased) for l in gb] for k in ga])


# ------------------------------------------------------------------------------ Gabor fits


def _gabor_1d(x, amp, x0, sigma, freq, phase, offset):
    return (
        amp
        * np.exp(-((x - x0) ** 2) / (2 * sigma**2))
        * np.cos(2 * np.pi * freq * (x - x0) + phase)
        + offset
    )


def _gabor_2d(xy, amp, x0, y0, sx, sy, theta, freq, phase, offset):
    x, y = xy
    xr = (x - x0) * np.cos(theta) + (y - y0) * np.sin(theta)
    yr = -(x - x0) * np.sin(theta) + (y - y0) * np.cos(theta)
    envelope = np.exp(-(xr**2) / (2 * sx**2) - yr**2 / (2 * sy**2))
    return amp * envelope * np.cos(2 * np.pi * freq * xr + phase) + offset


def _r2(target: np.ndarray, fit: np.ndarray) -> float:
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    if ss_tot == 0:
        return 0.0
    return 1.0 - float(np.sum((target - fit) ** 2)) / ss_tot


# Free parameters of the fitted Gabor by filter dimension (amplitude, centre, widths,
# orientation, frequency, phase, offset).
GABOR_PARAMETERS = {1: 6, 2: 9}


def gabor_fit(filters, *, restarts: int = 8, seed: int = 0) -> np.ndarray:
    """R^2 of the best Gabor fit to each 1-D or 2-D filter.

    A Gabor function (a Gaussian envelope times a sinusoid, plus an offset) is fitted by
    least squares (`scipy.optimize.curve_fit`) from `restarts` starting points over
    orientation, frequency and phase; the best fit's coefficient of determination is
    returned. Note the parameter count (6 in 1-D, 9 in 2-D): a 5-tap 1-D filter is fitted
    by almost anything, so compare against null filters (random init, Gaussian noise).

    Args:
      filters: (F, k) for 1-D or (F, k, k) for 2-D filters.
      restarts: starting points per filter.
      seed: seed of the starting points.

    Returns:
      (F,) R^2 values in (-inf, 1].
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    filters = np.asarray(filters, np.float64)
    if filters.ndim not in (2, 3):
        raise ValueError(
            f"gabor_fit takes (F, k) 1-D or (F, k, k) 2-D filters; got shape {filters.shape}."
        )
    rng = np.random.default_rng(seed)
    two_d = filters.ndim == 3
    k = filters.shape[1]
    c = (k - 1) / 2
    if two_d:
        yy, xx = np.mgrid[0:k, 0:k].astype(np.float64)
        coords = np.stack([xx.ravel(), yy.ravel()])
        fn = _gabor_2d
        lower = [-np.inf, -1, -1, 0.3, 0.3, -np.inf, 0.0, -np.inf, -np.inf]
        upper = [np.inf, k, k, 2 * k, 2 * k, np.inf, 0.5, np.inf, np.inf]
    else:
        coords = np.arange(k, dtype=np.float64)
        fn = _gabor_1d
        lower = [-np.inf, -1, 0.3, 0.0, -np.inf, -np.inf]
        upper = [np.inf, k, 2 * k, 0.5, np.inf, np.inf]
    out = np.empty(len(filters))
    for i, f in enumerate(filters):
        target = f.ravel()
        scale = float(np.abs(target).max()) or 1.0
        best = -np.inf
        for r in range(restarts):
            freq = rng.uniform(0.05, 0.45)
            phase = rng.uniform(0, 2 * np.pi)
            if two_d:
                theta = np.pi * r / restarts
                p0 = [scale, c, c, k / 4, k / 4, theta, freq, phase, 0.0]
            else:
                p0 = [scale, c + rng.uniform(-1, 1), k / 4, freq, phase, 0.0]
            try:
                with warnings.catch_warnings():  # "covariance could not be estimated"
                    warnings.simplefilter("ignore", OptimizeWarning)
                    p, _ = curve_fit(fn, coords, target, p0=p0, bounds=(lower, upper), maxfev=1000)
            except (RuntimeError, ValueError):  # no convergence from this start
                continue
            best = max(best, _r2(target, fn(coords, *p)))
            if best > 0.999:  # as good as it gets; the other starts cannot matter
                break
        out[i] = best if np.isfinite(best) else 0.0
    return out


def first_layer_filters(kernel) -> np.ndarray:
    """A conv kernel (k, in, out) or (k, k, in, out) as filters (out, k) or (out, k, k):
    for several input channels, the input channel with the largest norm."""
    kernel = np.asarray(kernel)
    if kernel.ndim not in (3, 4):
        raise ValueError(f"expected a 1-D or 2-D conv kernel; got shape {kernel.shape}.")
    moved = np.moveaxis(kernel, (-2, -1), (1, 0))  # (out, in, *k)
    norms = np.sqrt((moved**2).reshape(*moved.shape[:2], -1).sum(-1))
    pick = norms.argmax(1)
    return moved[np.arange(len(moved)), pick]


# ------------------------------------------------------------------------ receptive fields


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive field of one layer along one axis: `size` input positions,
    output units `jump` inputs apart, the first unit centred at input coordinate `start`."""

    size: int
    jump: int
    start: float


def receptive_fields(ops: Sequence[tuple[int, int, int]]) -> list[ReceptiveField]:
    """Receptive field after each of a stack of convolutions or poolings (one axis).

    Args:
      ops: (kernel, stride, left padding) per layer, input to output.

    Returns:
      One `ReceptiveField` per op (size r, jump j, centre of the first unit), by
      r_out = r_in + (k - 1) j_in, j_out = j_in s, start_out = start_in + ((k-1)/2 - p) j_in.

    >>> [rf.size for rf in receptive_fields([(3, 1, 1), (2, 2, 0), (3, 1, 1)])]
    [3, 4, 8]
    """
    size, jump, start = 1, 1, 0.0
    out = []
    for k, s, p in ops:
        if k < 1 or s < 1 or p < 0:
            raise ValueError(f"bad layer (kernel {k}, stride {s}, padding {p}).")
        size += (k - 1) * jump
        start += ((k - 1) / 2 - p) * jump
        jump *= s
        out.append(ReceptiveField(size, jump, start))
    return out


def _same_pad_left(n: int, k: int, s: int) -> int:
    out = -(-n // s)
    return max((out - 1) * s + k - n, 0) // 2


def cnn_receptive_fields(model, input_length: int) -> dict[str, ReceptiveField]:
    """Per block receptive field (one spatial axis) of a `dl.models.CNN` for inputs of
    `input_length` positions along that axis (SAME convolutions, stride-2 pooling)."""
    ops, names, n = [], {}, input_length
    for b, _ in enumerate(model.channels):
        for j in range(model.convs_per_block):
            k = model.first_kernel_size if b == j == 0 and model.first_kernel_size else None
            k = k or model.kernel_size
            s = model.strides if j == 0 else 1
            ops.append((k, s, _same_pad_left(n, k, s)))
            n = -(-n // s)
        if n >= 2 and model.pool != "none":
            ops.append((2, 2, 0))
            n //= 2
        names[f"block{b}"] = len(ops) - 1
    rfs = receptive_fields(ops)
    return {name: rfs[i] for name, i in names.items()}


def effective_receptive_field(
    model: nn.Module, variables, x, layer: str, *, mass: float = 0.95
) -> dict[str, Any]:
    """Luo et al. 2016's effective receptive field of `layer`'s centre unit.

    The gradient of the centre spatial position of `layer` (summed over its channels) with
    respect to the input, in absolute value, averaged over the examples `x` and the input
    channels. Its size is the number of input positions holding `mass` of the total
    gradient (largest first), so a Gaussian-shaped ERF of any amplitude is measured alike.

    Args:
      model, variables: the network (variables or a TrainState).
      x: inputs (N, ...) to average over.
      layer: a name from `activations(...)`.
      mass: fraction of the gradient mass the ERF must hold.

    Returns:
      {"map": (spatial...) gradient magnitude, "size": positions, "centre": output index}.
    """
    v = _variables(variables)
    x = jnp.asarray(x, jnp.float32)

    def centre_sum(xin):
        _, mutated = model.apply(v, xin, mutable=["intermediates"], **mode_kwargs(model, False))
        acts = _flatten_collection(mutated.get("intermediates", {}))
        if layer not in acts:
            raise ValueError(f"Unknown layer {layer!r}; the model sows {sorted(acts)}.")
        a = acts[layer]
        idx = tuple(d // 2 for d in a.shape[1:-1])
        return a[(slice(None), *idx)].sum(), idx

    grad, idx = jax.grad(centre_sum, has_aux=True)(x)
    g = np.abs(np.asarray(grad)).mean(axis=(0, -1))
    flat = np.sort(g.ravel())[::-1]
    total = flat.sum()
    size = int(np.searchsorted(np.cumsum(flat), mass * total) + 1) if total > 0 else 0
    return {"map": g, "size": size, "centre": tuple(int(i) for i in idx)}


# ------------------------------------------------------------------------------ top patches


def top_patches(
    acts, x, rf: ReceptiveField, *, channels: int = 8, k: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """The input patches that most excite each of the first `channels` channels.

    Args:
      acts: one layer's activations (N, *spatial, C).
      x: the inputs (N, *spatial_in, C_in) that produced them.
      rf: the layer's receptive field (the same along every spatial axis).
      channels: channels to show.
      k: patches per channel (the k largest activations over examples and positions).

    Returns:
      (patches (channels, k, *[rf.size]*nd, C_in), activation values (channels, k)).
      Parts of a patch outside the input are zero.
    """
    acts, x = np.asarray(acts), np.asarray(x)
    if len(acts) != len(x) or acts.ndim != x.ndim or acts.ndim < 3:
        raise ValueError(
            f"top_patches needs activations (N, *spatial, C) of the inputs (N, *spatial, C) "
            f"with the same N and spatial rank; got {acts.shape} and {x.shape}."
        )
    nd = acts.ndim - 2
    size = rf.size
    pad = size
    xp = np.pad(x, [(0, 0)] + [(pad, pad)] * nd + [(0, 0)])
    channels = min(channels, acts.shape[-1])
    patches = np.zeros((channels, k, *([size] * nd), x.shape[-1]), x.dtype)
    values = np.zeros((channels, k))
    for c in range(channels):
        a = acts[..., c]
        flat = np.argsort(a.ravel())[::-1][:k]
        for r, f in enumerate(flat):
            n, *pos = np.unravel_index(f, a.shape)
            lo = [int(math.floor(rf.start + p * rf.jump - (size - 1) / 2)) + pad for p in pos]
            sl = tuple(slice(o, o + size) for o in lo)
            patches[c, r] = xp[(n, *sl)]
            values[c, r] = a.ravel()[f]
    return patches, values


# --------------------------------------------------------------------- frozen-layer training


def train_frozen(
    model: nn.Module,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    copy: Mapping[str, Any] | None = None,
    frozen: Sequence[str] = (),
    epochs: int,
    batch_size: int = 100,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> tuple[float, dict[str, Any]]:
    """Train `model` with the top-level modules in `copy` taken from another network and
    the modules named in `frozen` kept fixed.

    With `copy=None` and `frozen` non-empty the frozen layers keep their random
    initialisation (the random-frozen control of transfer experiments).

    Args:
      model: a Linen classifier.
      train, test: (x, y) arrays.
      copy: {module name: params} to start from (e.g. another net's "conv0_0").
      frozen: module names whose parameters are not updated.
      epochs, batch_size, learning_rate, seed: Adam with a warmup-cosine schedule.

    Returns:
      (test accuracy after the last epoch, trained params).
    """
    from dl import optim
    from dl import train as tr

    x, y = np.asarray(train[0], np.float32), np.asarray(train[1])
    config = tr.FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optim.OptimizerConfig("adam", learning_rate, "warmup_cosine"),
        seed=seed,
        eval_every=epochs,
        steps_per_call=tr.default_steps_per_call(model),
        kernels="auto",
    )
    result = tr.train(
        model,
        (x, y),
        config,
        params=copy,
        frozen=list(frozen),
        eval_data={"test": test},
        progress=False,
        handle_signals=False,
        devices=1,
    )
    return float(result.history[-1]["test/accuracy"]), result.state.params
