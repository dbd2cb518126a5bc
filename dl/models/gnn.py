"""Graph neural networks on padded arrays: static shapes, so every step compiles once.

A batch of graphs is one big disconnected graph (`Graphs`): node features, edges as
(sender, receiver) index arrays, masks for the padding, and the graph each node belongs
to. Messages flow along edges sender -> receiver and are summed per receiver with
`jax.ops.segment_sum`; padded edges point at a padded node and are masked out.

(jraph did the same with a `GraphsTuple`; it is no longer maintained, so the few lines
it would give are written here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Graphs:
    """A padded batch of graphs.

    Attributes:
      nodes: (N, F) node features; rows past the real nodes are padding.
      senders, receivers: (E,) int32 edge endpoints; a directed edge sender -> receiver.
        An undirected graph lists both directions.
      node_mask: (N,) bool, real nodes.
      edge_mask: (E,) bool, real edges.
      node_graph: (N,) int32, the graph of each node (padding: the last graph slot).
      graph_mask: (G,) bool, real graphs.
    """

    nodes: jax.Array
    senders: jax.Array
    receivers: jax.Array
    node_mask: jax.Array
    edge_mask: jax.Array
    node_graph: jax.Array
    graph_mask: jax.Array

    @property
    def num_nodes(self) -> int:
        return self.nodes.shape[0]

    @property
    def num_graphs(self) -> int:
        return self.graph_mask.shape[0]


def pad_graphs(
    graphs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    max_nodes: int | None = None,
    max_edges: int | None = None,
    max_graphs: int | None = None,
) -> Graphs:
    """Pack graphs into one padded `Graphs`.

    Args:
      graphs: (node features (n, F), edges (m, 2) of [sender, receiver] within the graph).
      max_nodes, max_edges, max_graphs: padded sizes (default: exactly what is needed
        plus one padding node and one padding graph). Fixed sizes keep shapes static
        across batches.

    Returns:
      A `Graphs` of numpy arrays.
    """
    if not graphs:
        raise ValueError("pad_graphs needs at least one graph.")
    feats = [np.asarray(f, np.float32) for f, _ in graphs]
    edges = [np.asarray(e, np.int64).reshape(-1, 2) for _, e in graphs]
    widths = {f.shape[1] for f in feats if f.ndim == 2}
    if len(widths) != 1 or any(f.ndim != 2 for f in feats):
        raise ValueError(
            f"Every graph needs node features of shape (n, F) with one F; got "
            f"{sorted({f.shape for f in feats})}."
        )
    n_real = sum(len(f) for f in feats)
    e_real = sum(len(e) for e in edges)
    n_tot = max_nodes if max_nodes is not None else n_real + 1
    e_tot = max_edges if max_edges is not None else max(e_real, 1)
    g_tot = max_graphs if max_graphs is not None else len(graphs) + 1
    if n_tot < n_real + 1 or e_tot < e_real or g_tot < len(graphs) + 1:
        raise ValueError(
            f"The batch needs max_nodes >= {n_real + 1}, max_edges >= {e_real} and "
            f"max_graphs >= {len(graphs) + 1} (one padding node and graph); got "
            f"{n_tot}, {e_tot}, {g_tot}."
        )
    nodes = np.zeros((n_tot, widths.pop()), np.float32)
    senders = np.full(e_tot, n_tot - 1, np.int32)
    receivers = np.full(e_tot, n_tot - 1, np.int32)
    node_graph = np.full(n_tot, g_tot - 1, np.int32)
    offset, eo = 0, 0
    for g, (f, e) in enumerate(zip(feats, edges, strict=True)):
        if len(e) and (e.min() < 0 or e.max() >= len(f)):
            raise ValueError(
                f"Graph {g} has {len(f)} nodes but an edge refers to node "
                f"{int(e.max()) if e.max() >= len(f) else int(e.min())}."
            )
        nodes[offset : offset + len(f)] = f
        senders[eo : eo + len(e)] = e[:, 0] + offset
        receivers[eo : eo + len(e)] = e[:, 1] + offset
        node_graph[offset : offset + len(f)] = g
        offset += len(f)
        eo += len(e)
    return Graphs(
        nodes=nodes,
        senders=senders,
        receivers=receivers,
        node_mask=np.arange(n_tot) < n_real,
        edge_mask=np.arange(e_tot) < e_real,
        node_graph=node_graph,
        graph_mask=np.arange(g_tot) < len(graphs),
    )


def gcn_normalised_adjacency_apply(g: Graphs, h: jax.Array) -> jax.Array:
    """D^-1/2 (A + I) D^-1/2 h with A from the real edges (Kipf & Welling 2017)."""
    n = g.num_nodes
    w = g.edge_mask.astype(h.dtype)
    deg = jax.ops.segment_sum(w, g.receivers, num_segments=n) + 1.0  # + self loop
    inv_sqrt = jax.lax.rsqrt(deg)
    coef = (inv_sqrt[g.senders] * inv_sqrt[g.receivers] * w)[:, None]
    agg = jax.ops.segment_sum(h[g.senders] * coef, g.receivers, num_segments=n)
    return agg + h * (inv_sqrt**2)[:, None]


class GCNLayer(nn.Module):
    """h' = D^-1/2 (A + I) D^-1/2 h W (+ b): a graph convolution."""

    features: int

    @nn.compact
    def __call__(self, g: Graphs, h: jax.Array) -> jax.Array:
        h = nn.Dense(self.features, use_bias=False)(h)
        out = gcn_normalised_adjacency_apply(g, h)
        return out + self.param("bias", nn.initializers.zeros, (self.features,))


def segment_softmax(logits: jax.Array, segments: jax.Array, mask: jax.Array, n: int):
    """Softmax of edge logits (E, H) over the edges of each segment (receiver)."""
    logits = jnp.where(mask[:, None], logits, -jnp.inf)
    peak = jax.ops.segment_max(logits, segments, num_segments=n)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    ex = jnp.where(mask[:, None], jnp.exp(logits - peak[segments]), 0.0)
    total = jax.ops.segment_sum(ex, segments, num_segments=n)
    return ex / jnp.maximum(total[segments], 1e-30)


class GATLayer(nn.Module):
    """Graph attention (Velickovic et al. 2018): each node attends over its in-neighbours
    and itself; `heads` attention heads, concatenated (or averaged with concat=False)."""

    features: int
    heads: int = 4
    concat: bool = True
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, g: Graphs, h: jax.Array) -> jax.Array:
        n = g.num_nodes
        wh = nn.Dense(self.heads * self.features, use_bias=False)(h)
        wh = wh.reshape(n, self.heads, self.features)
        a_src = self.param("att_src", nn.initializers.glorot_uniform(), (self.heads, self.features))
        a_dst = self.param("att_dst", nn.initializers.glorot_uniform(), (self.heads, self.features))
        # Self loops for every node, so each node also attends to itself.
        loops = jnp.arange(n, dtype=g.senders.dtype)
        senders = jnp.concatenate([g.senders, loops])
        receivers = jnp.concatenate([g.receivers, loops])
        mask = jnp.concatenate([g.edge_mask, g.node_mask])
        logits = (wh[senders] * a_src).sum(-1) + (wh[receivers] * a_dst).sum(-1)  # (E', H)
        alpha = segment_softmax(nn.leaky_relu(logits, self.negative_slope), receivers, mask, n)
        out = jax.ops.segment_sum(alpha[..., None] * wh[senders], receivers, num_segments=n)
        out = out.reshape(n, -1) if self.concat else out.mean(axis=1)
        bias = self.param("bias", nn.initializers.zeros, (out.shape[-1],))
        return out + bias


def decode_dense(x: jax.Array) -> Graphs:
    """A batch of densely encoded graphs (see `dl.data.graphs.encode_dense`) as one
    padded `Graphs`: x is (B, n, n + 1 + F) = [adjacency row | node flag | features].

    Every ordered node pair of a graph is a candidate edge (B * n * n of them, a static
    number), masked by the adjacency; graph b's nodes are b * n ... b * n + n - 1.
    """
    b, n = x.shape[0], x.shape[1]
    if x.ndim != 3 or x.shape[2] < n + 1:
        raise ValueError(
            f"Dense graphs must be (B, n, n + 1 + F) [adjacency | node flag | features]; "
            f"got shape {tuple(x.shape)}."
        )
    adj = x[:, :, :n] > 0  # adj[b, receiver, sender]
    offsets = (jnp.arange(b) * n)[:, None, None]
    receivers = jnp.broadcast_to(jnp.arange(n)[None, :, None] + offsets, (b, n, n))
    senders = jnp.broadcast_to(jnp.arange(n)[None, None, :] + offsets, (b, n, n))
    return Graphs(
        nodes=x[:, :, n + 1 :].reshape(b * n, -1),
        senders=senders.reshape(-1).astype(jnp.int32),
        receivers=receivers.reshape(-1).astype(jnp.int32),
        node_mask=(x[:, :, n] > 0).reshape(-1),
        edge_mask=adj.reshape(-1),
        node_graph=jnp.repeat(jnp.arange(b, dtype=jnp.int32), n),
        graph_mask=jnp.ones((b,), bool),
    )


LAYERS = {"gcn": GCNLayer, "gat": GATLayer}


class GraphClassifier(nn.Module):
    """Graph or node classification: message-passing layers, then a masked readout per
    graph and a Dense head, or (readout="node") a Dense head on every node.

    Input: densely encoded graphs (B, n, n + 1 + F) (`dl.data.graphs.encode_dense`).

    Attributes:
      num_classes: outputs per graph.
      layer: "gcn" or "gat".
      hidden: features per layer (per head for GAT, heads concatenated).
      num_layers: message-passing layers, each followed by ReLU.
      heads: GAT heads.
      readout: "mean" or "sum" over each graph's real nodes: outputs (B, num_classes);
        or "node": one output per node, (B, n, num_classes), for node classification
        (label padded and unlabelled nodes -1, see `dl.metrics.UNLABELLED`).
    """

    num_classes: int
    layer: str = "gcn"
    hidden: int = 64
    num_layers: int = 3
    heads: int = 4
    readout: str = "mean"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.layer not in LAYERS:
            raise ValueError(f"layer must be one of {sorted(LAYERS)}; got {self.layer!r}.")
        if self.readout not in ("mean", "sum", "node"):
            raise ValueError(f"readout must be 'mean', 'sum' or 'node'; got {self.readout!r}.")
        g = decode_dense(x)
        h = g.nodes
        for i in range(self.num_layers):
            if self.layer == "gat":
                h = GATLayer(self.hidden, heads=self.heads, name=f"gat{i}")(g, h)
            else:
                h = GCNLayer(self.hidden, name=f"gcn{i}")(g, h)
            h = nn.relu(h) * g.node_mask[:, None]
        num = x.shape[0]
        if self.readout == "node":
            return nn.Dense(self.num_classes, name="head")(h).reshape(num, x.shape[1], -1)
        pooled = jax.ops.segment_sum(h, g.node_graph, num_segments=num)
        if self.readout == "mean":
            count = jax.ops.segment_sum(g.node_mask.astype(h.dtype), g.node_graph, num)
            pooled = pooled / jnp.maximum(count, 1.0)[:, None]
        return nn.Dense(self.num_classes, name="head")(pooled)
