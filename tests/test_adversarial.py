"""dl.adversarial: FGSM by hand on a linear model; PGD stays in its ball and is stronger."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from dl import adversarial


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3, name="out")(x.reshape(len(x), -1))


@pytest.fixture(scope="module")
def linear():
    model = Linear()
    variables = model.init(jax.random.key(0), np.zeros((1, 4), np.float32))
    return model, variables


def test_fgsm_matches_the_hand_computed_sign_of_the_gradient(linear):
    model, variables = linear
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    w = np.asarray(variables["params"]["out"]["kernel"])
    b = np.asarray(variables["params"]["out"]["bias"])
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T  # d CE / d x for a linear softmax classifier
    adv = adversarial.fgsm(model, variables, x, y, 0.05)
    np.testing.assert_allclose(adv, x + 0.05 * np.sign(grad), atol=1e-6)
    # eps 0 changes nothing; clipping keeps pixels in [0, 1].
    np.testing.assert_array_equal(adversarial.fgsm(model, variables, x, y, 0.0), x)
    assert adversarial.fgsm(model, variables, x, y, 5.0).max() <= 1.0


def test_pgd_stays_in_the_ball_and_beats_fgsm(linear):
    model, variables = linear
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (64, 4)).astype(np.float32)
    y = np.asarray(model.apply(variables, x).argmax(1))  # all correct before the attack
    eps = 0.1
    adv = adversarial.pgd(model, variables, x, y, eps, steps=20)
    assert np.abs(adv - x).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    acc_pgd, _ = adversarial.accuracy_under(
        model, variables, x, y, lambda xb, yb: adversarial.pgd(model, variables, xb, yb, eps)
    )
    acc_fgsm, _ = adversarial.accuracy_under(
        model, variables, x, y, lambda xb, yb: adversarial.fgsm(model, variables, xb, yb, eps)
    )
    assert acc_pgd <= acc_fgsm < 1.0
    noise = adversarial.random_sign_noise(x, eps)
    assert np.abs(noise - np.clip(x, 0, 1)).max() <= eps + 1e-6


def test_pgd_restarts_only_add_fooled_examples(linear):
    model, variables = linear
    x = np.random.default_rng(2).uniform(0, 1, (256, 4)).astype(np.float32)
    y = np.asarray(model.apply(variables, x).argmax(1))
    eps = 0.05

    def correct(adv):
        return np.asarray(model.apply(variables, adv).argmax(1)) == y

    kw = dict(steps=1, step_size=0.2 * eps, seed=3)  # the random start matters
    one = adversarial.pgd(model, variables, x, y, eps, **kw)
    many = adversarial.pgd(model, variables, x, y, eps, restarts=4, **kw)
    assert np.abs(many - x).max() <= eps + 1e-6
    # Whatever the first restart fooled stays fooled (it is kept), and restarts fool more.
    assert not np.any(correct(many) & ~correct(one))
    assert correct(many).sum() < correct(one).sum() < len(x)
    with pytest.raises(ValueError, match="restarts"):
        adversarial.pgd(model, variables, x, y, eps, restarts=2, random_start=False)


def test_bad_input(linear):
    model, variables = linear
    x, y = np.zeros((2, 4), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match="eps must be"):
        adversarial.fgsm(model, variables, x, y, -0.1)
    with pytest.raises(ValueError, match="3 examples"):
        adversarial.pgd(model, variables, np.zeros((3, 4)), y, 0.1)
    with pytest.raises(ValueError, match="steps"):
        adversarial.pgd(model, variables, x, y, 0.1, steps=0)
