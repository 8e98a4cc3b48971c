"""Self-critical training: its reward is the CIDEr-D the papers report, and it improves what the
decoder samples toward that reward."""

import random

import pytest
import torch

from models.scst import CiderD, sample, words_of


def test_cider_d_is_pycocoevalcaps_cider():
    from pycocoevalcap.cider.cider import Cider

    rng = random.Random(0)
    vocab = "a dog man runs on the beach in snow red ball with two".split()
    refs = {str(i): [" ".join(rng.choices(vocab, k=rng.randint(4, 10))) for _ in range(5)] for i in range(60)}
    cands = {k: " ".join(rng.choices(vocab, k=rng.randint(3, 12))) for k in refs}
    ids = {w: i + 3 for i, w in enumerate(vocab)}
    scorer = CiderD({k: [[ids[w] for w in r.split()] for r in v] for k, v in refs.items()})
    ours = sum(scorer.score(k, [ids[w] for w in c.split()]) for k, c in cands.items()) / len(cands)
    theirs = Cider().compute_score(refs, {k: [c] for k, c in cands.items()})[0]
    assert ours == pytest.approx(theirs, rel=1e-9)
    # A reference itself scores far above a random caption.
    assert scorer.score("0", [ids[w] for w in refs["0"][0].split()]) > 3 * ours


def test_scst_raises_the_reward_of_what_the_decoder_samples(trained, tmp_path):
    from conftest import copy_of_trained

    from models.captioner import load_model
    from tasks.cache import Ref
    from tasks.features import Features, feature_dir, read_features
    from tasks.train import ModelRef, ScstConfig, finetune_scst, reference_ids
    from warehouse.db import connect, model_version

    ws = copy_of_trained(trained, tmp_path)
    con = connect(ws, read_only=True)
    version = model_version(con, None).version
    con.close()
    model, checkpoint = load_model(ws.path(f"models/{version}.pt"), torch.device("cpu"))
    enc = checkpoint["encoder"]
    captions = Ref(ws.relative(next(ws.path("parquet").glob("captions-*"))), "captions")
    features = Features(feature_dir(enc["name"], enc["image_size"], enc["grid"]), "features", enc["name"], enc["image_size"], enc["grid"], ())

    val = reference_ids(ws, captions, "val")
    photos = sorted(val)[:200]
    scorer = CiderD({p: val[p] for p in photos}, list(reference_ids(ws, captions, "train").values()))
    feats = torch.from_numpy(read_features(ws, features, photos))

    def sampled_reward(m) -> float:
        torch.manual_seed(1)
        drawn = words_of(sample(m, m.image_vectors(feats), 5))
        return float(scorer.scores([p for p in photos for _ in range(5)], drawn).mean())

    before = sampled_reward(model)
    tuned = finetune_scst(ws, captions, features, ModelRef(f"models/{version}.pt", version, version, checkpoint["metrics"]), ScstConfig(epochs=1, lr=5e-4))
    after = sampled_reward(load_model(ws.path(tuned.path), torch.device("cpu"))[0])
    assert after > before + 0.1, (before, after)
