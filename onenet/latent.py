"""Maps of the latent space: a t-SNE word map and a word similarity graph (write-up [E]).

Both read the decoder's word vectors. t-SNE is the exact O(N^2) algorithm (a few hundred words:
a second or two), written out here in torch so onenet needs no scikit-learn; the graph is a
networkx graph (GraphML for Gephi/Cytoscape) drawn with a seeded spring layout.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import torch
from PIL import Image

from onenet.artifacts import draw_points
from onenet.vectors import normalise


def tsne(vectors: np.ndarray, perplexity: float = 15.0, iterations: int = 750, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2): exact t-SNE (cosine distances, early exaggeration, momentum descent)."""
    x = torch.from_numpy(normalise(vectors)).double()
    n = len(x)
    if n < 3:
        return np.zeros((n, 2))
    distances = (1 - x @ x.T).clamp_min(0) * 2  # squared euclidean of unit vectors
    p = _affinities(distances, min(perplexity, (n - 1) / 3))
    p = (p + p.T) / (2 * n)
    generator = torch.Generator().manual_seed(seed)
    y = 1e-4 * torch.randn(n, 2, generator=generator, dtype=torch.double)
    velocity, gains = torch.zeros_like(y), torch.ones_like(y)
    for step in range(iterations):
        exaggeration, momentum = (12.0, 0.5) if step < 250 else (1.0, 0.8)
        q_num = 1 / (1 + torch.cdist(y, y).pow(2))
        q_num.fill_diagonal_(0)
        q = (q_num / q_num.sum()).clamp_min(1e-12)
        grad = 4 * (((exaggeration * p - q) * q_num).unsqueeze(2) * (y.unsqueeze(1) - y.unsqueeze(0))).sum(1)
        gains = torch.where((grad > 0) != (velocity > 0), gains + 0.2, gains * 0.8).clamp_min(0.01)
        velocity = momentum * velocity - 200.0 * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y.numpy()


def _affinities(distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Row-wise Gaussian affinities whose entropy matches log(perplexity) (binary search on beta)."""
    n = len(distances)
    target = math.log(perplexity)
    beta = torch.ones(n, dtype=torch.double)
    lo, hi = torch.full_like(beta, 0.0), torch.full_like(beta, float("inf"))
    mask = ~torch.eye(n, dtype=torch.bool)
    for _ in range(60):
        logits = -distances * beta[:, None]
        logits = logits.masked_fill(~mask, -float("inf"))
        p = logits.softmax(1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(1)
        too_flat = entropy > target  # raise beta
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    return p


def similarity_graph(words: list[str], vectors: np.ndarray, neighbours: int = 3, threshold: float = 0.3) -> nx.Graph:
    """Each word linked to its `neighbours` nearest words (cosine >= threshold); edge weight = cosine."""
    units = normalise(vectors)
    similarity = units @ units.T
    np.fill_diagonal(similarity, -np.inf)
    graph = nx.Graph()
    graph.add_nodes_from(words)
    for i, word in enumerate(words):
        for j in np.argsort(-similarity[i])[:neighbours]:
            if similarity[i, j] >= threshold:
                graph.add_edge(word, words[j], weight=round(float(similarity[i, j]), 4))
    return graph


def graph_picture(graph: nx.Graph, size: int = 900, seed: int = 0) -> Image.Image:
    words = list(graph.nodes)
    position = nx.spring_layout(graph, seed=seed, weight="weight")
    xy = np.array([position[w] for w in words]) if words else np.zeros((0, 2))
    index = {w: i for i, w in enumerate(words)}
    edges = [(index[a], index[b], d["weight"]) for a, b, d in graph.edges(data=True)]
    return draw_points(words, xy, size, edges) if words else Image.new("RGB", (size, size), "white")
