"""A captioner that tunes the encoder's top (`onenet train --tune-blocks N`): it learns from the
captions where the frozen top cannot, and every use of the version runs its own top."""

from __future__ import annotations

import copy
import io
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from answers.queries import Queries
from core.photos import load_pixels
from core.workspace import Workspace
from flows.train import TrainOptions, train_flow
from models.captioner import load_model
from models.encoder import DEFAULT_ENCODER, EncoderTop, load_encoder, trunk_name
from models.joint import JointConfig
from tasks import shapes
from tasks.cache import TaskRuns
from tasks.captions import clean_captions_task
from tasks.features import collect_features, feature_dir, stored_ids
from tasks.ingest import ingest_folders
from tasks.source import add_ingested_task, source_shapes
from tasks.train import TrainConfig, train_decoder

IMAGES, EPOCHS = 600, 4
DECODER = TrainConfig(epochs=EPOCHS, top_lr=1e-3)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """A shapes workspace whose model tunes the last block and the head of the encoder."""
    ws = Workspace.at(tmp_path_factory.mktemp("tuned"))
    options = TrainOptions(n_images=IMAGES, tune_blocks=1, decoder=DECODER, joint=JointConfig(epochs=1))
    result = train_flow(workspace=str(ws.root), options=options)
    return {"workspace": ws, "result": result, "options": options}


def test_tuning_the_top_lowers_validation_loss_against_the_frozen_top(tuned):
    ws, o = tuned["workspace"], tuned["options"]
    run = TaskRuns(ws.results)  # the flow's own inputs: cache hits
    manifest = run(add_ingested_task, workspace=ws, manifest=run(source_shapes, workspace=ws, n=o.n_images, seed=o.seed))
    captions = run(clean_captions_task, workspace=ws, manifest=manifest, min_count=1, max_words=o.max_words)
    name = trunk_name(o.encoder, o.tune_blocks)
    photos = [(i, "") for i in sorted(stored_ids(ws.path(feature_dir(name, o.image_size, o.grid))))]
    features = collect_features(ws, photos, name, o.image_size, o.grid, [])
    # The same model, batches and seed; only the top's learning rate differs (0: it stays ImageNet's).
    frozen = train_decoder(ws, captions, features, replace(o.decoder, top_lr=0.0))
    tuned_loss, frozen_loss = tuned["result"]["metrics"]["val_loss"], frozen.metrics["val_loss"]
    assert tuned_loss < frozen_loss - 0.03, (tuned_loss, frozen_loss)


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
