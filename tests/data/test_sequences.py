import numpy as np
import pytest

from dl import data
from dl.data.sequences import CharTokenizer, adding_problem, read_corpus


def test_adding_problem_targets_are_the_marked_sums():
    x, y = adding_problem(200, 30, np.random.default_rng(0))
    assert x.shape == (200, 30, 2) and y.shape == (200, 1)
    marks = x[..., 1]
    assert np.all(marks.sum(1) == 2)
    assert np.all(marks[:, :15].sum(1) == 1) and np.all(marks[:, 15:].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * marks).sum(1), rtol=1e-6)
    # Predicting the mean gives MSE ~ 1/6 (the variance of a sum of two U(0, 1)).
    _, y_big = adding_problem(20000, 30, np.random.default_rng(1))
    assert abs(y_big.var() - 1 / 6) < 0.01


def test_load_adding():
    ds = data.load("adding", length=50, num_train=100, num_test=20, seed=3)
    assert ds.task == "regression" and ds.loss == "mse" and ds.num_classes == 1
    assert ds.input_shape == (50, 2) and ds.x_train.shape == (100, 50, 2)
    again = data.load("adding", length=50, num_train=100, num_test=20, seed=3)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    with pytest.raises(ValueError, match="length must be >= 2"):
        data.load("adding", length=1)


def test_mnist5k_rows_is_a_view_of_mnist5k(mnist5k):
    rows = data.load("mnist5k_rows")
    assert rows.input_shape == (28, 28) and rows.task == "classification"
    np.testing.assert_array_equal(rows.x_train, mnist5k.x_train[..., 0])
    np.testing.assert_array_equal(rows.y_test, mnist5k.y_test)


def test_char_tokenizer_roundtrip_and_unknown():
    tok = CharTokenizer.from_text("hello world")
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.decode(tok.encode("hellé")) == "hell?"
    assert tok.size == len(set("hello world") | {"?"})


def test_pytext_windows_and_split():
    ds = data.load("pytext", seq_len=64)
    assert ds.task == "language_model" and ds.input_dtype == "int32"
    assert ds.x_train.shape[1] == 64 and ds.y_train.shape == ds.x_train.shape
    # y is x shifted by one character: the next-character targets.
    np.testing.assert_array_equal(ds.x_train[0, 1:], ds.y_train[0, :-1])
    np.testing.assert_array_equal(ds.y_train[0, -1], ds.x_train[1, 0])
    tok = data.tokenizer(ds)
    text = read_corpus()
    assert tok.decode(ds.x_train[0]) == text[:64]
    n_val = len(ds.x_test) * 65
    assert 0.05 < n_val / len(text) < 0.15  # the last 10% is validation, disjoint
    assert "def " in tok.decode(ds.x_train[:500])
    assert ds.num_classes == tok.size and int(ds.x_train.max()) < tok.size
