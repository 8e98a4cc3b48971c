"""The attention decoder (models/attention.py) learns captions from cells and writes them with beam search."""

import torch

from models.attention import AttendTell, AttentionConfig
from models.beam import beam_search
from models.captioner import pad_batch

WORDS = 12


def test_it_learns_each_photos_caption_from_its_cells_and_beam_search_writes_it():
    torch.manual_seed(0)
    grids = torch.randn(4, 49, 16)  # four photos of 49 cells
    captions = [[3, 4, 5], [6, 7], [8, 9, 10, 11], [4, 8]]  # of different lengths: beam search sheds finished photos
    model = AttendTell(WORDS, AttentionConfig(features=16, dim=16, att=16, hidden=32, dropout=0.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss, tokens = model.loss(grids, pad_batch(captions), alpha_c=0.0)  # the cross-entropy alone: the penalty has a floor
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    assert tokens == sum(len(c) + 1 for c in captions)
    assert loss.item() < first / 10, (first, loss.item())
    model.eval()
    written = beam_search(model, grids, beam_size=3, max_len=8, alpha=1.0)
    assert [c.tokens for c in written] == captions


def test_its_attention_weights_are_a_distribution_over_the_cells():
    model = AttendTell(WORDS, AttentionConfig(features=16, dim=16, att=16, hidden=32)).eval()
    a, keys = model.cells(torch.randn(2, 49, 16))
    h, c = model.initial(a)
    _, _, weights = model._step(torch.tensor([1, 1]), h, c, a, keys)
    assert weights.shape == (2, 49) and torch.allclose(weights.sum(1), torch.ones(2)) and (weights >= 0).all()
