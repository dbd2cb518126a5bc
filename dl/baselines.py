"""Classical baselines from scikit-learn, and one fit / predict / result interface shared
with the ELM (`dl.elm`) and the deep models (`DeepClassifier`) in the experiments.

Every estimator here has `fit(x, y) -> self` and `predict(x) -> labels`; `run` times
both and returns a `Result`. Inputs are flattened to (N, features).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dl._errors import unknown_name


def _logreg(seed: int, **kw):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kw.setdefault("max_iter", 2000)
    kw.setdefault("C", 1.0)
    return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed, **kw))


def _linear_svm(seed: int, **kw):
    # A linear SVM (hinge loss, L2) fitted by SGD: liblinear's LinearSVC took 83-107 s on
    # mnist5k (primal or dual), SGD about a second at similar accuracy.
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kw.setdefault("alpha", 1e-3)
    kw.setdefault("max_iter", 100)
    kw.setdefault("tol", 1e-4)
    return make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", random_state=seed, **kw))


def _rbf_svm(seed: int, **kw):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    kw.setdefault("C", 10.0)
    kw.setdefault("gamma", "scale")
    return make_pipeline(StandardScaler(), SVC(random_state=seed, **kw))


def _tree(seed: int, **kw):
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed, **kw)


def _forest(seed: int, **kw):
    from sklearn.ensemble import RandomForestClassifier

    kw.setdefault("n_estimators", 200)
    kw.setdefault("n_jobs", -1)
    return RandomForestClassifier(random_state=seed, **kw)


def _gbt(seed: int, **kw):
    from sklearn.ensemble import HistGradientBoostingClassifier

    kw.setdefault("max_iter", 100)
    return HistGradientBoostingClassifier(random_state=seed, **kw)


def _knn(seed: int, **kw):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kw.setdefault("n_neighbors", 5)
    return make_pipeline(StandardScaler(), KNeighborsClassifier(**kw))


# name -> (factory(seed, **params) -> estimator, description)
BASELINES: dict[str, tuple[Callable[..., Any], str]] = {
    "logreg": (_logreg, "logistic regression (L2, C=1) on standardised features"),
    "linear_svm": (_linear_svm, "linear SVM (hinge loss, L2 1e-3, SGD) on standardised features"),
    "rbf_svm": (_rbf_svm, "RBF-kernel SVM (C=10, gamma='scale') on standardised features"),
    "tree": (_tree, "decision tree (CART, grown fully)"),
    "forest": (_forest, "random forest, 200 trees"),
    "knn": (_knn, "k-nearest neighbours, k=5, on standardised features"),
    "gbt": (_gbt, "gradient-boosted trees (histogram-based, 100 iterations)"),
}


def make_baseline(name: str, seed: int = 0, **params):
    """A scikit-learn classifier by name (see `BASELINES`), seeded."""
    if name not in BASELINES:
        raise unknown_name("baseline", name, BASELINES)
    return BASELINES[name][0](seed, **params)


@dataclasses.dataclass
class Result:
    """One fitted model's numbers on one dataset and seed."""

    model: str
    dataset: str
    seed: int
    accuracy: float
    train_time_s: float
    predict_time_s: float
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def flatten_inputs(x) -> np.ndarray:
    """(N, ...) inputs as an (N, features) matrix for the flat-vector learners."""
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def run(
    estimator,
    name: str,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    dataset: str = "",
    seed: int = 0,
    flatten: bool = True,
) -> Result:
    """Fit `estimator` on `train`, predict `test`; time both (wall clock) and score."""
    (x, y), (xt, yt) = train, test
    if flatten:
        x, xt = flatten_inputs(x), flatten_inputs(xt)
    t0 = time.perf_counter()
    estimator.fit(x, np.asarray(y))
    t1 = time.perf_counter()
    pred = np.asarray(estimator.predict(xt))
    t2 = time.perf_counter()
    params = estimator.get_params() if hasattr(estimator, "get_params") else {}
    params = {k: v for k, v in params.items() if isinstance(v, int | float | str | bool)}
    return Result(
        model=name,
        dataset=dataset,
        seed=seed,
        accuracy=float(np.mean(pred == np.asarray(yt))),
        train_time_s=t1 - t0,
        predict_time_s=t2 - t1,
        params=params,
        extra=dict(getattr(estimator, "extra_", {})),
    )


class DeepClassifier:
    """A `dl` model behind fit / predict: `dl.recipes.default_config(model, dataset)`
    with overrides, trained by `dl.train.train` on the arrays given to `fit`.

    After `fit`, `history_` has one row per epoch (with "test/accuracy" when
    `eval_data` was given, for time-to-accuracy measurements) and `extra_` the times:
    "compile_time_s" (the train step), and per epoch "step_time_by_epoch_s" (the train
    steps alone), "eval_time_by_epoch_s" and "time_s_by_epoch" (cumulative wall time).
    """

    def __init__(self, model: str, dataset: str, *, eval_data=None, **overrides):
        from dl.recipes import default_config

        self.config = default_config(model, dataset, **overrides)
        self.eval_data = eval_data

    def get_params(self) -> dict[str, Any]:
        c = self.config
        return {"model": c.model, "epochs": c.epochs, "learning_rate": c.learning_rate}

    def fit(self, x, y) -> DeepClassifier:
        from dl import models, train

        c = self.config
        x = np.asarray(x, np.float32)
        num_classes = int(np.max(y)) + 1
        self.model_ = models.get_model(c.model, num_classes, kernels=c.kernels, **c.model_kwargs)
        result = train.train(
            self.model_,
            (x, y),
            c.fit_config(self.model_),
            eval_data={"test": self.eval_data} if self.eval_data is not None else None,
            progress=False,
            devices=1,
        )
        self.state_, self.history_ = result.state, result.history
        self.extra_ = {
            "time_s_by_epoch": [h["time_s"] for h in result.history],
            "step_time_by_epoch_s": [
                h["epoch_time_s"] - h.get("eval_time_s", 0.0) for h in result.history
            ],
            "eval_time_by_epoch_s": [h.get("eval_time_s", 0.0) for h in result.history],
            "test_accuracy_by_epoch": [h.get("test/accuracy") for h in result.history],
            "compile_time_s": result.compile_time_s,
        }
        return self

    def predict_proba(self, x) -> np.ndarray:
        """Softmax class probabilities (N, K)."""
        import jax

        from dl import train

        x = np.asarray(x, np.float32)
        logits = train.predict(self.model_, self.state_, x, kernels=self.config.kernels)
        return np.asarray(jax.nn.softmax(logits, axis=-1))

    def predict(self, x) -> np.ndarray:
        return np.argmax(self.predict_proba(x), axis=1)
