"""Pictures for Prefect artifacts: photo grids with captions and the word map, as markdown.

Artifacts live in Prefect's database and the UI shows them beside the flow run, so images are
embedded as small PNG data URIs (a few KB each) rather than links to files a browser cannot open.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.photo_files import upright_thumbnail
from core.workspace import Workspace


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(path: Path, size: int = 96) -> Image.Image | None:
    try:
        return upright_thumbnail(path, size, min_side=size)  # HEIC and camera RAW too
    except Exception:  # a sample picture is nice to have; a missing file is not worth failing for
        return None


def photo_cell(workspace: Workspace, path: str, alt: str | None = None, size: int = 96) -> str:
    """A markdown table cell showing the photo at `path` (workspace-relative or absolute) inline."""
    full = workspace.path(path)  # an absolute path stays as it is
    image = thumbnail(full, size)
    alt = alt or full.name
    return f"![{alt}]({data_uri(image)})" if image is not None else f"`{alt}` (file missing)"


def photo_grid(workspace: Workspace, rows: list[tuple[str, str]], title: str, size: int = 96) -> str:
    """Markdown: one line per (photo path, caption) with the photo inlined as a thumbnail."""
    lines = [f"# {title}", "", "| photo | caption |", "|---|---|"]
    for path, caption in rows:
        lines.append(f"| {photo_cell(workspace, path, size=size)} | {caption.replace('|', '/')} |")
    return "\n".join(lines)


def word_map(words: list[str], vectors: np.ndarray, size: int = 720) -> Image.Image:
    """The words placed by the first two principal components of their vectors, as a picture."""
    x = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return draw_points(words, x @ vt[:2].T, size)


def draw_points(labels: list[str], xy: np.ndarray, size: int = 900, edges: list[tuple[int, int, float]] = ()) -> Image.Image:
    """Labels at 2-d positions (scaled to the picture), optional edges (i, j, weight) beneath."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    margin = 50
    scaled = margin + (xy - lo) / np.maximum(hi - lo, 1e-9) * (size - 2 * margin)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for i, j, weight in edges:
        shade = int(220 - 150 * max(0.0, min(1.0, weight)))
        draw.line([tuple(scaled[i]), tuple(scaled[j])], fill=(shade, shade, 235), width=1)
    for label, (px, py) in zip(labels, scaled):
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=(70, 110, 200))
        draw.text((px + 5, py - 6), label, fill=(20, 20, 20))
    return image


def word_map_markdown(words: list[str], vectors: np.ndarray, title: str) -> str:
    return f"# {title}\n\n![word map]({data_uri(word_map(words, vectors))})\n\nPCA of the decoder's word vectors (most frequent words)."
