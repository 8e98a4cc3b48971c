"""Decoders that write captions together (`onenet train --decoders N`): members read the first
decoder's image vectors, the version carries them all, and together they predict held-out
captions better than their average member."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models.beam import caption_vectors
from models.captioner import PAD_ID, Captioner, CaptionerConfig, Ensemble, load_model, pad_batch, with_end


def _tiny(members: int = 0) -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(feature_dim=12, vocab_size=9, dim=8, hidden=8, members=members)).eval()


def test_an_ensemble_of_copies_writes_what_one_decoder_writes():
    model = _tiny(members=1)
    alone = copy.deepcopy(model)
    alone.members = torch.nn.ModuleList()
    words = [f"w{i}" for i in range(9)]
    vecs = model.image_vectors(torch.randn(6, 12))
    assert isinstance(model.writer, Ensemble) and alone.writer is alone
    different = caption_vectors(model, words, vecs)
    decoder = {k: v for k, v in alone.state_dict().items() if not k.startswith(("feature_", "image_proj"))}
    model.members[0].load_state_dict(decoder)  # the member becomes a copy of the first decoder
    together, one = caption_vectors(model, words, vecs), caption_vectors(alone, words, vecs)
    assert [t for t, _ in together] == [t for t, _ in one]
    assert [s for _, s in together] == pytest.approx([s for _, s in one], abs=1e-5)
    assert [t for t, _ in different] != [t for t, _ in one]  # a different member changed the captions


def test_members_come_back_from_the_checkpoint_and_read_vectors_only():
    model = _tiny(members=2)
    again = Captioner.from_checkpoint(model.checkpoint())
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    vecs = torch.randn(3, 8)
    assert torch.equal(again.members[0].image_vectors(vecs), vecs)
    with pytest.raises(Exception, match="reads image vectors takes 8 values, not 12"):
        Captioner(CaptionerConfig(feature_dim=12, vocab_size=9, dim=8, hidden=8, reads_vectors=True))


def test_decoders_together_predict_held_out_captions_better_than_their_mean(trained, tmp_path):
    from conftest import copy_of_trained

    from tasks.cache import Ref
    from tasks.features import Features, feature_dir, read_features
    from tasks.train import TrainConfig, load_split, train_decoder
    from warehouse.db import connect, model_version

    ws = copy_of_trained(trained, tmp_path)
    con = connect(ws, read_only=True)
    version = model_version(con, None).version
    con.close()
    enc = load_model(ws.path(f"models/{version}.pt"), torch.device("cpu"))[1]["encoder"]
    captions = Ref(ws.relative(next(ws.path("parquet").glob("captions-*"))), "captions")
    features = Features(feature_dir(enc["name"], enc["image_size"], enc["grid"]), "features", enc["name"], enc["image_size"], enc["grid"], ())

    ref = train_decoder(ws, captions, features, TrainConfig(epochs=2, decoders=2))
    model, checkpoint = load_model(ws.path(ref.path), torch.device("cpu"))
    assert model.cfg.members == 1 and len(checkpoint["member_history"]) == 1

    ids, tokens, _ = load_split(ws, captions, "val")
    ids, tokens = ids[:1000], pad_batch(tokens[:1000])
    with torch.no_grad():
        vecs = model.image_vectors(torch.from_numpy(read_features(ws, features, ids)))
        targets = with_end(tokens)

        def nll(log_probs: torch.Tensor) -> float:
            return F.nll_loss(log_probs.transpose(1, 2), targets, ignore_index=PAD_ID).item()

        each = [nll(F.log_softmax(d(vecs, tokens), dim=-1)) for d in model.writer.decoders]
        together = nll(model.writer.log_probs(vecs, tokens))
    # The ensemble's distribution is the decoders' normalised product: below their mean loss when
    # they differ (equal to it without the normalisation). On shapes the members, which cannot
    # shape the image vector, stay behind the first decoder (Flickr8k: level; BENCHMARKS.md).
    assert together < sum(each) / len(each) - 0.01, (together, each)
    assert max(each) < 2.0, each  # the member learned (untrained: ~3.4, log of the vocabulary)
    with torch.no_grad():  # ... to read the first decoder's image vectors: other photos' vectors mislead it
        member = model.members[0]
        shuffled = nll(F.log_softmax(member(vecs[torch.randperm(len(vecs), generator=torch.Generator().manual_seed(0))], tokens), dim=-1))
    assert shuffled > each[1] + 0.1, (shuffled, each[1])


def test_members_and_self_critical_training_are_not_combined():
    from core.errors import OnenetError
    from flows.train import check_options, options_for

    with pytest.raises(OnenetError, match="--decoders > 1 with --scst-epochs"):
        check_options(options_for("shapes", decoder={"decoders": 3}, scst={"epochs": 2}))
    check_options(options_for("shapes", decoder={"decoders": 3}))
