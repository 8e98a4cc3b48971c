"""A captioner that tunes the encoder's top (`onenet train --tune-blocks N`): the version carries
its trained top, and what lands for a new photo is read through it, not through the frozen one."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from answers.queries import Queries
from core.photos import load_pixels
from core.workspace import Workspace
from flows.train import TrainOptions, train_flow
from models.captioner import load_model
from models.encoder import DEFAULT_ENCODER, EncoderTop, load_encoder
from models.joint import JointConfig
from tasks import shapes
from tasks.ingest import ingest_folders
from tasks.train import TrainConfig

IMAGES, EPOCHS = 300, 2
DECODER = TrainConfig(epochs=EPOCHS, top_lr=1e-3)  # a large step: the test is about where the top is used


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """A shapes workspace whose model tunes the last block and the head of the encoder."""
    ws = Workspace.at(tmp_path_factory.mktemp("tuned"))
    options = TrainOptions(n_images=IMAGES, tune_blocks=1, decoder=DECODER, joint=JointConfig(epochs=1))
    result = train_flow(workspace=str(ws.root), options=options)
    return {"workspace": ws, "result": result, "options": options}


def test_the_version_carries_its_top_and_ingest_reads_photos_through_it(tuned, tmp_path):
    ws = tuned["workspace"]
    version = tuned["result"]["version"]
    model, checkpoint = load_model(ws.path(f"models/{version}.pt"), torch.device("cpu"))
    assert checkpoint["encoder"]["name"] == f"{DEFAULT_ENCODER}@15" and model.cfg.top == checkpoint["encoder"]["name"]
    pretrained = EncoderTop.pretrained(model.cfg.top, model.cfg.grid)
    moved = max((a - b).abs().max().item() for a, b in zip(model.top.state_dict().values(), pretrained.state_dict().values()))
    assert moved > 1e-3  # trained, and saved with the version

    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(3):
        buffer = io.BytesIO()
        shapes.scene(23, i).image.save(buffer, format="PNG")
        (folder / f"scene {i}.png").write_bytes(buffer.getvalue())
    assert ingest_folders(ws, [str(folder)])["new"] == 3

    trunk = load_encoder(checkpoint["encoder"]["name"], checkpoint["encoder"]["grid"])
    pixels = torch.stack([load_pixels(folder / f"scene {i}.png", checkpoint["encoder"]["image_size"]) for i in range(3)])
    with torch.no_grad():
        own = model.image_vectors(trunk.features(pixels))
        frozen_model = copy.deepcopy(model)
        frozen_model.top.load_state_dict(pretrained.state_dict())
        frozen = frozen_model.image_vectors(trunk.features(pixels))
    q = Queries.open(ws)
    try:
        ids = [image_id for (image_id,) in q.sql(f"SELECT image_id FROM images WHERE path LIKE '{folder}/%' ORDER BY path")[1]]
        landed = torch.from_numpy(np.stack(q.image_vectors(ids)))
    finally:
        q.close()
    cosine = lambda a, b: F.cosine_similarity(a, b, dim=1)  # noqa: E731
    assert cosine(landed, own).min() > 0.9999  # the version's top
    assert cosine(landed, frozen).max() < cosine(landed, own).min() - 1e-3  # not the frozen one
