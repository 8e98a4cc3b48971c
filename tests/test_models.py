"""The captioner on the default device (CUDA when present): it learns, and inversion works."""

import pytest
import torch
import torch.nn.functional as F

from core.errors import OnenetError
from models import default_device
from models.beam import beam_search
from models.captioner import PAD_ID, Captioner, CaptionerConfig, pad_batch, with_end
from models.inversion import InversionConfig, invert

DEVICE = default_device()


def tiny_trained_captioner(
    device: torch.device = DEVICE, captions: tuple[list[int], list[int]] = ([3, 4], [5, 6]), steps: int = 150
) -> tuple[Captioner, torch.Tensor, torch.Tensor]:
    """Two kinds of 'photo' (features around +1 or -1) captioned 'a b' and 'c d' (ids 3..6)."""
    torch.manual_seed(0)
    vocab = max(max(c) for c in captions) + 1
    model = Captioner(CaptionerConfig(feature_dim=8, vocab_size=vocab, dim=16, hidden=16, dropout=0.0)).to(device)
    features = torch.cat([torch.randn(16, 8) * 0.1 + 1, torch.randn(16, 8) * 0.1 - 1]).to(device)  # (32, 8)
    tokens = pad_batch([captions[0]] * 16 + [captions[1]] * 16).to(device)  # (32, T)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(model.image_vectors(features), tokens)
        loss = F.cross_entropy(logits.transpose(1, 2), with_end(tokens), ignore_index=PAD_ID)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval().requires_grad_(False), features, tokens


def test_captioner_learns_and_beam_search_reads_it_back_on_the_default_device():
    model, features, _ = tiny_trained_captioner()
    captions = beam_search(model, model.image_vectors(features[[0, -1]]), beam_size=2)
    assert [c.tokens for c in captions] == [[3, 4], [5, 6]]


def test_inversion_finds_a_vector_the_decoder_describes_as_asked():
    model, features, _ = tiny_trained_captioner()
    vectors = model.image_vectors(features)
    mean, std = vectors.mean(0), vectors.std(0) + 1e-4
    query = pad_batch([[5, 6], [3, 4]]).to(DEVICE)
    found, nll = invert(model, query, mean, std, InversionConfig(restarts=4, steps=150))
    assert found.shape == (2, 16) and found.device.type == DEVICE.type
    at_mean = model.sequence_nll(mean.expand(2, -1), query)
    assert (nll < 0.5 * at_mean).all(), (nll, at_mean)
    # the decoder now says the query for each optimised vector
    assert [c.tokens for c in beam_search(model, found, beam_size=2)] == [[5, 6], [3, 4]]


def test_decoding_settings_travel_with_the_checkpoint():
    """Set at training, kept in the checkpoint; a checkpoint from before they had their own entry
    keeps its length normalisation and gets the other defaults."""
    from models.captioner import Decoding

    model = Captioner(CaptionerConfig(feature_dim=8, vocab_size=6, dim=16, hidden=16), Decoding(beam_size=5, length_alpha=1.0, rerank=50))
    checkpoint = {**model.checkpoint(), "vocab": ["<pad>", "<end>", "<unk>", "a", "b", "c"]}
    assert Captioner.from_checkpoint(checkpoint).decoding == Decoding(beam_size=5, length_alpha=1.0, rerank=50)
    assert Decoding(beam_size=5).label == "beam5"
    older = {"config": {**checkpoint["config"], "length_alpha": 1.0}, "state_dict": checkpoint["state_dict"]}
    assert Captioner.from_checkpoint(older).decoding == Decoding(length_alpha=1.0)
    with pytest.raises(OnenetError, match="vocabulary starts"):
        Captioner.from_checkpoint({**checkpoint, "vocab": ["a", "<pad>", "<end>", "<unk>"]})
