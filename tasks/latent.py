"""Maps of the latent space: a t-SNE word map and a word similarity graph (write-up [E]).

Both read the decoder's word vectors. The t-SNE is openTSNE's (the maintained implementation);
the graph is a networkx graph (GraphML for Gephi/Cytoscape) drawn with a seeded spring layout.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from PIL import Image

from core.vectors import normalise
from tasks.artifacts import draw_points


def tsne(vectors: np.ndarray, perplexity: float = 15.0, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, 2) with openTSNE: exact affinities on cosine distances (a few hundred words),
    PCA initialisation, one thread, a fixed seed: the same map every run."""
    from openTSNE import TSNE

    n = len(vectors)
    if n < 3:
        return np.zeros((n, 2))
    embedding = TSNE(
        perplexity=min(perplexity, (n - 1) / 3), metric="cosine", neighbors="exact", negative_gradient_method="bh",
        initialization="pca", random_state=seed, n_jobs=1,
    ).fit(normalise(vectors).astype(np.float64))
    return np.asarray(embedding)


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
