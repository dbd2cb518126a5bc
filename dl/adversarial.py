"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) under an
L-infinity budget, and accuracy under attack.

The attacks are pure functions of (variables, x, y, eps, key), compiled once per model;
inputs are kept inside the valid pixel range (`clip`). They attack the model in inference
mode (BatchNorm running statistics, no dropout).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dl.analysis import _variables
from dl.models import mode_kwargs


def _loss_grad(model: nn.Module, variables, x, y):
    def loss(xx):
        logits = model.apply(variables, xx, **mode_kwargs(model, False))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

    return jax.grad(loss)(x)


def _check(x, y, eps):
    x, y = np.asarray(x, np.float32), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}.")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 (an L-infinity radius); got {eps}.")
    return x, y


def fgsm(model: nn.Module, variables, x, y, eps: float, *, clip=(0.0, 1.0)) -> np.ndarray:
    """Fast gradient sign method: x + eps * sign(grad_x loss), clipped to `clip`.

    Args:
      model, variables: a classifier (variables or a TrainState).
      x, y: inputs and integer labels.
      eps: L-infinity radius, in input units (pixels in [0, 1]: 0.1 is 10% of the range).
      clip: valid input range, or None.

    Returns:
      Adversarial inputs with the shape of `x`.
    """
    x, y = _check(x, y, eps)
    return np.asarray(_fgsm(model, clip)(_variables(variables), x, y, jnp.float32(eps)))


@functools.lru_cache(maxsize=16)
def _fgsm(model, clip):
    def attack(v, x, y, eps):
        adv = x + eps * jnp.sign(_loss_grad(model, v, x, y))
        return adv if clip is None else jnp.clip(adv, *clip)

    return jax.jit(attack)


def pgd(
    model: nn.Module,
    variables,
    x,
    y,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    seed: int = 0,
    clip=(0.0, 1.0),
) -> np.ndarray:
    """Projected gradient descent (Madry et al. 2018) in the L-infinity ball of radius eps.

    `steps` signed-gradient steps of `step_size` (default 2.5 eps / steps), each followed
    by projection onto the ball around `x` and onto `clip`, from a uniform random start
    in the ball (`random_start`). With `restarts` > 1 (random starts only), each example
    keeps the first restart's input that the model misclassifies (else the last
    restart's): an example counts as robust only if every restart fails.

    Returns:
      Adversarial inputs with the shape of `x`.
    """
    x, y = _check(x, y, eps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    if restarts < 1 or (restarts > 1 and not random_start):
        raise ValueError(
            f"restarts must be >= 1, and 1 without a random start; got restarts={restarts}, "
            f"random_start={random_start}."
        )
    alpha = 2.5 * eps / steps if step_size is None else step_size
    fn = _pgd(model, clip, int(steps), bool(random_start))
    v = _variables(variables)
    best = None
    for r in range(restarts):
        key = jax.random.fold_in(jax.random.key(seed), r)
        adv = np.asarray(fn(v, x, y, jnp.float32(eps), jnp.float32(alpha), key))
        if best is None:
            best = adv
        else:
            robust = np.asarray(
                model.apply(v, best, **mode_kwargs(model, False)).argmax(-1)
            ) == np.asarray(y)
            best = np.where(robust.reshape((-1,) + (1,) * (adv.ndim - 1)), adv, best)
    return best


@functools.lru_cache(maxsize=16)
def _pgd(model, clip, steps, random_start):
    def project(adv, x, eps):
        adv = jnp.clip(adv, x - eps, x + eps)
        return adv if clip is None else jnp.clip(adv, *clip)

    def attack(v, x, y, eps, alpha, key):
        adv = x
        if random_start:
            adv = project(x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), x, eps)

        def body(_, a):
            return project(a + alpha * jnp.sign(_loss_grad(model, v, a, y)), x, eps)

        return jax.lax.fori_loop(0, steps, body, adv)

    return jax.jit(attack)


def random_sign_noise(x, eps: float, *, seed: int = 0, clip=(0.0, 1.0)) -> np.ndarray:
    """The control: x + eps * (random signs), the same L-infinity size as the attacks."""
    x = np.asarray(x, np.float32)
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], np.float32), x.shape)
    adv = x + np.float32(eps) * signs
    return adv if clip is None else np.clip(adv, *clip)


def accuracy_under(
    model: nn.Module, variables, x, y, perturb, *, batch_size: int = 500
) -> tuple[float, np.ndarray]:
    """Accuracy on `perturb(x_batch, y_batch)`, batch by batch; returns (accuracy, the
    perturbed inputs)."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    v = _variables(variables)
    predict = jax.jit(lambda vv, xx: model.apply(vv, xx, **mode_kwargs(model, False)).argmax(-1))
    advs, correct = [], 0
    for i in range(0, len(x), batch_size):
        adv = perturb(x[i : i + batch_size], y[i : i + batch_size])
        correct += int(np.sum(np.asarray(predict(v, adv)) == y[i : i + batch_size]))
        advs.append(adv)
    return correct / len(x), np.concatenate(advs)
