"""Graph datasets: generated cycles versus trees (graph classification) and Zachary's
karate club (node classification, from networkx).

Graphs are stored densely so that a batch is one array and `dl.train` batches it like
any other: x[g] is (n, n + 1 + F) = [adjacency row | node flag | node features] for a
graph padded to n nodes (`encode_dense`); `dl.models.gnn.decode_dense` turns a batch
back into edge lists for message passing.
"""

from __future__ import annotations

import numpy as np

from dl._errors import check_positive_int
from dl.data.datasets import Dataset


def encode_dense(graphs, max_nodes: int) -> np.ndarray:
    """(features (k, F), undirected edges (m, 2)) per graph -> (G, n, n + 1 + F) float32."""
    width = {np.asarray(f).shape[1] for f, _ in graphs}
    if len(width) != 1:
        raise ValueError(f"All graphs need the same feature width; got {sorted(width)}.")
    f_dim = width.pop()
    out = np.zeros((len(graphs), max_nodes, max_nodes + 1 + f_dim), np.float32)
    for i, (feats, edges) in enumerate(graphs):
        k = len(feats)
        if k > max_nodes:
            raise ValueError(f"Graph {i} has {k} nodes, more than max_nodes={max_nodes}.")
        for s, r in np.asarray(edges, np.int64).reshape(-1, 2):
            out[i, r, s] = out[i, s, r] = 1.0
        out[i, :k, max_nodes] = 1.0
        out[i, :k, max_nodes + 1 :] = feats
    return out


def _random_tree(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A uniformly random labelled tree from a random Pruefer sequence."""
    if n == 2:
        return [(0, 1)]
    seq = rng.integers(0, n, size=n - 2)
    degree = np.ones(n, int)
    np.add.at(degree, seq, 1)
    edges = []
    for v in seq:
        leaf = int(np.flatnonzero(degree == 1)[0])
        edges.append((leaf, int(v)))
        degree[leaf] -= 1
        degree[v] -= 1
    u, w = np.flatnonzero(degree == 1)
    return [*edges, (int(u), int(w))]


def _degree_features(k: int, edges, max_degree: int = 4) -> np.ndarray:
    """One-hot node degree (capped), the usual features of graphs without node labels."""
    deg = np.zeros(k, int)
    for a, b in edges:
        deg[a] += 1
        deg[b] += 1
    return np.eye(max_degree + 1, dtype=np.float32)[np.minimum(deg, max_degree)]


def cycles_and_trees(n: int, *, min_nodes: int = 6, max_nodes: int = 16, seed: int = 0):
    """`n` graphs, half single cycles (label 0) and half random trees (label 1), with
    node counts drawn from [min_nodes, max_nodes] and one-hot degree features (a cycle
    has as many edges as nodes and every degree 2; a tree has one edge less, and
    leaves). Node order is shuffled."""
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for i in range(n):
        k = int(rng.integers(min_nodes, max_nodes + 1))
        label = i % 2
        edges = [(j, (j + 1) % k) for j in range(k)] if label == 0 else _random_tree(k, rng)
        perm = rng.permutation(k)
        edges = [(int(perm[a]), int(perm[b])) for a, b in edges]
        graphs.append((_degree_features(k, edges), edges))
        labels.append(label)
    order = rng.permutation(n)
    return [graphs[i] for i in order], np.asarray(labels, np.int32)[order]


def load_cycles_trees(
    *,
    num_train: int = 1000,
    num_test: int = 400,
    min_nodes: int = 6,
    max_nodes: int = 16,
    seed: int = 0,
) -> Dataset:
    """Graph classification, cycles versus trees, densely encoded (see module doc)."""
    num_train = check_positive_int("num_train", num_train)
    num_test = check_positive_int("num_test", num_test)
    if not 3 <= min_nodes <= max_nodes:
        raise ValueError(f"Need 3 <= min_nodes <= max_nodes; got {min_nodes}, {max_nodes}.")
    graphs, y = cycles_and_trees(
        num_train + num_test, min_nodes=min_nodes, max_nodes=max_nodes, seed=seed
    )
    x = encode_dense(graphs, max_nodes)
    return Dataset(
        name="cycles_trees",
        x_train=x[:num_train],
        y_train=y[:num_train],
        x_test=x[num_train:],
        y_test=y[num_train:],
        num_classes=2,
        input_shape=tuple(x.shape[1:]),
        class_names=("cycle", "tree"),
        description=f"generated cycles vs random trees, {min_nodes}-{max_nodes} nodes",
    )


def load_karate(*, labelled: tuple[int, ...] = (0, 33)) -> Dataset:
    """Zachary's karate club (34 members, 78 friendships; networkx ships it) as
    semi-supervised node classification: which club each member joined after the split
    ("Mr. Hi" = 0 or "Officer" = 1).

    One graph, node features the identity (as in Kipf & Welling 2017). The train labels
    are those of the `labelled` nodes only (default: the two leaders, one per club), all
    other nodes -1 (unlabelled); the test labels are those of every other node.
    """
    import networkx as nx  # imported here: only this dataset needs it

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    clubs = ("Mr. Hi", "Officer")
    y = np.array([clubs.index(g.nodes[i]["club"]) for i in range(n)], np.int32)
    labelled = tuple(int(i) for i in labelled)
    if not labelled or min(labelled) < 0 or max(labelled) >= n:
        raise ValueError(f"labelled must name nodes in [0, {n}); got {labelled}.")
    x = encode_dense([(np.eye(n, dtype=np.float32), list(g.edges()))], n)
    train = np.full((1, n), -1, np.int32)
    train[0, list(labelled)] = y[list(labelled)]
    test = y[None].copy()
    test[0, list(labelled)] = -1
    return Dataset(
        name="karate",
        x_train=x,
        y_train=train,
        x_test=x,
        y_test=test,
        num_classes=2,
        input_shape=tuple(x.shape[1:]),
        class_names=clubs,
        description=f"Zachary's karate club, {len(labelled)} labelled node(s), node labels",
    )


DATASETS = {
    "cycles_trees": (
        load_cycles_trees,
        "graph classification, generated: cycles vs random trees (dense encoding)",
    ),
    "karate": (
        load_karate,
        "node classification: Zachary's karate club, one labelled node per club",
    ),
}
