"""Latent maps of the promoted model: a t-SNE word map and a word similarity graph.

    onenet latent [--words 300] [--neighbours 3]

Each is a cached task writing under exports/<version>/latent/ (word_map.png, word_graph.graphml,
word_graph.png) and a Prefect artifact (`word-map-tsne`, `word-graph`) with the picture inline.
"""

from __future__ import annotations

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from core.files import sha256_file
from core.workspace import Workspace
from tasks.artifacts import data_uri
from tasks.cache import Ref, TaskRuns, cached_task
from warehouse.db import model_version, reading
from warehouse.reads import frequent_words


def _top_words(ws: Workspace, version: str, n: int) -> tuple[list[str], np.ndarray]:
    with reading(ws) as con:
        rows = frequent_words(con, n, version)
    return [w for w, _ in rows], np.asarray([v for _, v in rows], dtype=np.float32)


@cached_task(name="word-map-tsne")
def word_map_task(workspace: Workspace, version: str, words: int, seed: int) -> Ref:
    from tasks.artifacts import draw_points
    from tasks.latent import tsne

    labels, vectors = _top_words(workspace, version, words)
    path = workspace.path(f"exports/{version}/latent/word_map.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_points(labels, tsne(vectors, seed=seed)).save(path)
    return Ref(workspace.relative(path), sha256_file(path))


@cached_task(name="word-graph")
def word_graph_task(workspace: Workspace, version: str, words: int, neighbours: int, threshold: float) -> Ref:
    import networkx as nx

    from tasks.latent import graph_picture, similarity_graph

    labels, vectors = _top_words(workspace, version, words)
    graph = similarity_graph(labels, vectors, neighbours, threshold)
    folder = workspace.path(f"exports/{version}/latent")
    folder.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(graph, folder / "word_graph.graphml")
    graph_picture(graph).save(folder / "word_graph.png")
    return Ref(workspace.relative(folder / "word_graph.graphml"), sha256_file(folder / "word_graph.graphml"))


@flow(name="onenet-latent")
def latent_flow(workspace: str, words: int = 300, neighbours: int = 3, threshold: float = 0.3, version: str | None = None, seed: int = 0) -> dict:
    """The word map (t-SNE of the `words` most frequent words) and the similarity graph."""
    from PIL import Image

    ws = Workspace.at(workspace)
    with reading(ws) as con:
        version = model_version(con, version).version
    run = TaskRuns(ws.results)
    word_map = run(word_map_task, workspace=ws, version=version, words=words, seed=seed)
    graph = run(word_graph_task, workspace=ws, version=version, words=min(words, 200), neighbours=neighbours, threshold=threshold)
    graph_png = ws.path(graph.path).with_suffix(".png")
    with Image.open(ws.path(word_map.path)) as image:
        create_markdown_artifact(
            key="word-map-tsne", markdown=f"# Word map (t-SNE), model {version}\n\n![word map]({data_uri(image.convert('RGB'))})",
            description=f"t-SNE of the {words} most frequent words' vectors, model {version}",
        )
    with Image.open(graph_png) as image:
        create_markdown_artifact(
            key="word-graph", markdown=f"# Word similarity graph, model {version}\n\n![word graph]({data_uri(image.convert('RGB'))})\n\nGraphML: `{graph.path}`",
            description=f"each word linked to its {neighbours} nearest (cosine >= {threshold}), model {version}",
        )
    return {"version": version, "word_map": str(ws.path(word_map.path)), "graphml": str(ws.path(graph.path)), "graph_png": str(graph_png), "tasks": run.states}
