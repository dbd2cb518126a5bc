"""Message passing on padded graphs, against dense hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl.models.gnn import (
    GATLayer,
    GCNLayer,
    gcn_normalised_adjacency_apply,
    pad_graphs,
    segment_softmax,
)

# A triangle 0-1-2 with a tail 2-3, undirected (both directions listed).
UNDIRECTED = [(0, 1), (1, 2), (0, 2), (2, 3)]
EDGES = np.array(UNDIRECTED + [(b, a) for a, b in UNDIRECTED])


def _feats(n, f=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, f)).astype(np.float32)


def _dense_adj(edges, n):
    a = np.zeros((n, n), np.float32)
    for s, r in edges:
        a[r, s] += 1.0  # row = receiver
    return a


def test_pad_graphs_layout_and_errors():
    g = pad_graphs([(_feats(4), EDGES), (_feats(2), [(0, 1), (1, 0)])], max_nodes=8)
    assert g.nodes.shape == (8, 3) and g.num_graphs == 3
    assert g.node_mask.tolist() == [True] * 6 + [False] * 2
    assert g.node_graph.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert g.senders[len(EDGES)] == 4 and g.receivers[len(EDGES)] == 5  # offset by 4
    assert g.edge_mask.sum() == len(EDGES) + 2
    with pytest.raises(ValueError, match="refers to node 5"):
        pad_graphs([(_feats(4), [(0, 5)])])
    with pytest.raises(ValueError, match="max_nodes >= 5"):
        pad_graphs([(_feats(4), EDGES)], max_nodes=4)
    with pytest.raises(ValueError, match="one F"):
        pad_graphs([(_feats(4, 3), EDGES), (_feats(2, 5), [])])


def test_gcn_propagation_matches_the_dense_formula():
    h = _feats(4)
    g = pad_graphs([(h, EDGES)], max_nodes=7, max_edges=12)
    a_hat = _dense_adj(EDGES, 4) + np.eye(4)
    d = np.diag(1 / np.sqrt(a_hat.sum(1)))
    want = d @ a_hat @ d @ h
    got = gcn_normalised_adjacency_apply(g, jnp.asarray(g.nodes))[:4]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _apply(layer, g, seed=0):
    v = layer.init(jax.random.key(seed), g, jnp.asarray(g.nodes))
    return v, np.asarray(layer.apply(v, g, jnp.asarray(g.nodes)))


@pytest.mark.parametrize("layer", [GCNLayer(5), GATLayer(4, heads=2)])
def test_batched_graphs_do_not_leak_and_padding_does_not_matter(layer):
    a, b = (_feats(4, seed=1), EDGES), (_feats(3, seed=2), [(0, 1), (1, 0), (1, 2), (2, 1)])
    batch = pad_graphs([a, b], max_nodes=10, max_edges=20)
    batch = batch.replace(nodes=np.where(batch.node_mask[:, None], batch.nodes, 99.0))
    v, out = _apply(layer, batch)
    alone_a = pad_graphs([a])
    alone_b = pad_graphs([b])
    np.testing.assert_allclose(out[:4], layer.apply(v, alone_a, alone_a.nodes)[:4], atol=1e-5)
    np.testing.assert_allclose(out[4:7], layer.apply(v, alone_b, alone_b.nodes)[:3], atol=1e-5)


def test_gat_matches_a_dense_single_head_computation():
    h = _feats(4)
    g = pad_graphs([(h, EDGES)])
    layer = GATLayer(2, heads=1)
    v, out = _apply(layer, g)
    p = v["params"]
    wh = h @ np.asarray(p["Dense_0"]["kernel"])
    a_src, a_dst = np.asarray(p["att_src"])[0], np.asarray(p["att_dst"])[0]
    adj = _dense_adj(EDGES, 4) + np.eye(4)  # in-neighbours and self
    want = np.zeros((4, 2), np.float32)
    for i in range(4):
        nbrs = np.nonzero(adj[i])[0]
        e = np.array([wh[j] @ a_src + wh[i] @ a_dst for j in nbrs])
        e = np.where(e > 0, e, 0.2 * e)
        alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
        want[i] = (alpha[:, None] * wh[nbrs]).sum(0)
    np.testing.assert_allclose(out[:4], want, rtol=1e-4, atol=1e-5)


def test_segment_softmax_normalises_per_receiver():
    logits = jnp.array([[1.0], [2.0], [3.0], [50.0]])
    seg = jnp.array([0, 0, 1, 1])
    mask = jnp.array([True, True, True, False])
    p = np.asarray(segment_softmax(logits, seg, mask, 3))[:, 0]
    np.testing.assert_allclose(p[:2].sum(), 1.0, rtol=1e-6)
    assert p[2] == pytest.approx(1.0) and p[3] == 0.0  # the masked edge gets nothing


def test_gcn_is_permutation_equivariant():
    h = _feats(4)
    perm = np.array([2, 0, 3, 1])  # new node i is old node perm[i]
    inv = np.argsort(perm)
    g1 = pad_graphs([(h, EDGES)])
    g2 = pad_graphs([(h[perm], inv[EDGES])])
    layer = GCNLayer(3)
    v, out1 = _apply(layer, g1)
    out2 = np.asarray(layer.apply(v, g2, jnp.asarray(g2.nodes)))
    np.testing.assert_allclose(out2[:4], out1[perm], rtol=1e-5, atol=1e-6)


def test_dense_encoding_roundtrip_and_classifier_invariances():
    from dl.data.graphs import cycles_and_trees, encode_dense
    from dl.models import get_model
    from dl.models.gnn import decode_dense

    graphs, labels = cycles_and_trees(6, min_nodes=5, max_nodes=8, seed=1)
    x = encode_dense(graphs, 8)
    g = decode_dense(jnp.asarray(x))
    for i, (feats, edges) in enumerate(graphs):
        k = len(feats)
        assert int(g.node_mask[i * 8 : (i + 1) * 8].sum()) == k
        assert int(g.edge_mask.reshape(6, 64)[i].sum()) == 2 * len(edges)  # both directions
        np.testing.assert_array_equal(g.nodes[i * 8 : i * 8 + k], feats)
    cycles = [len(f) == len(e) for f, e in graphs]
    assert [int(c) for c in cycles] == [1 - int(y) for y in labels]
    for name in ("gcn", "gat"):
        model = get_model(name, 2, hidden=8, num_layers=2)
        v = model.init(jax.random.key(0), x)
        out = np.asarray(model.apply(v, x))
        # The same graphs padded to 12 nodes, nodes relabelled: the same outputs.
        perm_graphs = []
        rng = np.random.default_rng(0)
        for feats, edges in graphs:
            p = rng.permutation(len(feats))
            inv = np.argsort(p)
            perm_graphs.append((feats[p], [(int(inv[a]), int(inv[b])) for a, b in edges]))
        x12 = encode_dense(perm_graphs, 12)
        v12 = jax.tree.map(lambda a: a, v)
        np.testing.assert_allclose(model.apply(v12, x12), out, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="more than max_nodes=4"):
        encode_dense(graphs, 4)
