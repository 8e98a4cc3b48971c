"""Beam search: keeps finished hypotheses, normalises length, batches without changing answers."""

import math

import pytest
import torch

from models.beam import beam_search
from models.captioner import END_ID, Captioner, CaptionerConfig

A, B, C = 3, 4, 5  # word ids after <pad>, <end>, <unk>


class MarkovDecoder:
    """A decoder whose next-word distribution depends only on the previous word."""

    def __init__(self, first: dict[int, float], after: dict[int, dict[int, float]], vocab: int = 6):
        self.first, self.after, self.vocab = first, after, vocab
        self.writer = self  # what caption_vectors decodes with: one decoder, as a Captioner without members

    def _logp(self, dist: dict[int, float]) -> torch.Tensor:
        p = torch.full((self.vocab,), 1e-9)
        for token, prob in dist.items():
            p[token] = prob
        return p.log()

    def start(self, image_vecs):
        n = image_vecs.size(0)
        return self._logp(self.first).expand(n, -1).clone(), torch.zeros(1, n, 1)

    def step(self, tokens, h):
        return torch.stack([self._logp(self.after.get(int(t), {END_ID: 1.0})) for t in tokens]), h


def test_a_hypothesis_that_finished_early_is_not_dropped():
    # "b <end>" (p = 0.45) ends at step 2. Every caption starting with "a" goes on ("a c", then
    # <end> or "a" again) and is less likely per token. A search that keeps only live beams
    # would lose "b"; greedy decoding starts with "a" and never recovers.
    model = MarkovDecoder(
        first={A: 0.55, B: 0.45},
        after={A: {C: 1.0}, B: {END_ID: 1.0}, C: {END_ID: 0.3, A: 0.7}},
    )
    (best,) = beam_search(model, torch.zeros(1, 8), beam_size=2, alpha=0.7)
    assert best.tokens == [B]
    assert math.isclose(best.logprob, math.log(0.45), rel_tol=1e-4)
    (greedy,) = beam_search(model, torch.zeros(1, 8), beam_size=1)
    assert greedy.tokens[:2] == [A, C]


def test_length_normalisation_prefers_a_longer_caption_that_is_nearly_as_likely():
    # "b <end>": 0.5 * 0.5 = 0.25 ; "a b <end>": 0.5 * 0.8 * 0.5 = 0.2 (better per token)
    model = MarkovDecoder(first={A: 0.5, B: 0.5}, after={A: {B: 0.8, END_ID: 0.2}, B: {END_ID: 0.5, A: 0.5}})
    (normalised,) = beam_search(model, torch.zeros(1, 8), beam_size=3, alpha=0.7)
    (raw,) = beam_search(model, torch.zeros(1, 8), beam_size=3, alpha=0.0)
    assert normalised.tokens == [A, B]
    assert raw.tokens == [B]


def test_captions_use_the_decoding_settings_the_model_was_trained_with():
    from models.beam import caption_vectors
    from models.captioner import Decoding

    model = MarkovDecoder(first={A: 0.5, B: 0.5}, after={A: {B: 0.8, END_ID: 0.2}, B: {END_ID: 0.5, A: 0.5}})
    words = ["<pad>", "<end>", "<unk>", "a", "b", "c"]
    model.decoding = Decoding(beam_size=3, length_alpha=0.7)
    assert caption_vectors(model, words, torch.zeros(1, 8))[0][0] == "a b"
    model.decoding = Decoding(beam_size=3, length_alpha=0.0)
    assert caption_vectors(model, words, torch.zeros(1, 8))[0][0] == "b"
    # one call may override one setting; the rest stay the model's
    assert caption_vectors(model, words, torch.zeros(1, 8), model.decoding.but(length_alpha=0.7))[0][0] == "a b"
    model.decoding = Decoding(beam_size=3, length_alpha=0.7, max_len=1)  # "a b" needs two words
    assert len(caption_vectors(model, words, torch.zeros(1, 8))[0][0].split()) <= 1


def test_never_repeats_the_previous_word():
    model = MarkovDecoder(first={A: 1.0}, after={A: {A: 0.9, B: 0.05, END_ID: 0.05}, B: {END_ID: 1.0}})
    (best,) = beam_search(model, torch.zeros(1, 8), beam_size=2)
    assert all(x != y for x, y in zip(best.tokens, best.tokens[1:]))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_never_falls_into_a_loop_of_repeated_word_sequences(beam_size):
    # a -> b -> a -> b ... is the likeliest path; "a b a" may appear once, never twice.
    model = MarkovDecoder(first={A: 1.0}, after={A: {B: 0.9, END_ID: 0.1}, B: {A: 0.8, C: 0.1, END_ID: 0.1}, C: {END_ID: 1.0}})
    (best,) = beam_search(model, torch.zeros(1, 8), beam_size=beam_size, max_len=12)
    trigrams = list(zip(best.tokens, best.tokens[1:], best.tokens[2:]))
    assert len(trigrams) == len(set(trigrams)), best.tokens
    if beam_size == 1:
        assert best.tokens[:4] == [A, B, A, B]  # ...and then not "a" again


@pytest.mark.parametrize("rnn,every_step", [("gru", False), ("lstm", True)])
def test_batched_search_gives_the_same_captions_as_one_image_at_a_time(rnn, every_step):
    torch.manual_seed(0)
    cfg = CaptionerConfig(feature_dim=16, vocab_size=30, dim=32, hidden=32, rnn=rnn, image_every_step=every_step)
    model = Captioner(cfg).eval()
    for p in model.parameters():  # sharper distributions so captions differ between images
        p.data.mul_(4)
    vecs = torch.randn(6, 32) * 3
    together = beam_search(model, vecs, beam_size=3, max_len=8)
    alone = [beam_search(model, vecs[i : i + 1], beam_size=3, max_len=8)[0] for i in range(6)]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert len({tuple(c.tokens) for c in together}) > 1
    # The score beam search reports is the decoder's own likelihood of the caption it wrote.
    for b, caption in enumerate(together):
        logp = model(vecs[b : b + 1], torch.tensor([caption.tokens], dtype=torch.long)).log_softmax(-1)[0]  # (T + 1, V)
        targets = caption.tokens + ([END_ID] if len(caption.tokens) < 8 else [])  # unfinished at max_len: no <end>
        expected = sum(logp[t, w].item() for t, w in enumerate(targets))
        assert math.isclose(expected, caption.logprob, rel_tol=1e-4), (b, expected, caption.logprob)


class EndsOrRambles:
    """Images with a positive first number end their caption at once; the others never end."""

    def __init__(self):
        self.rows_per_step: list[int] = []

    def _logp(self, ends: torch.Tensor) -> torch.Tensor:  # (n,) bool -> (n, 10)
        quick = torch.full((10,), 1e-9).index_fill(0, torch.tensor([END_ID]), 0.9).index_fill(0, torch.tensor([A]), 0.1)
        rambling = torch.full((10,), 1.0 / 7).index_fill(0, torch.tensor([0, 1, 2]), 1e-9)
        return torch.where(ends.unsqueeze(1), quick, rambling).log()

    def start(self, image_vecs):
        ends = image_vecs[:, 0] > 0
        return self._logp(ends), ends.float().view(1, -1, 1)

    def step(self, tokens, h):
        self.rows_per_step.append(len(tokens))
        return self._logp(h[0, :, 0] > 0), h


def test_finished_images_leave_the_batch_and_the_others_still_fall_back_at_max_len():
    decoder = EndsOrRambles()
    vecs = torch.tensor([[1.0], [-1.0], [1.0], [1.0]])
    together = beam_search(decoder, vecs, beam_size=2, max_len=6)
    alone = [beam_search(EndsOrRambles(), vecs[i : i + 1], beam_size=2, max_len=6)[0] for i in range(4)]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert [len(c.tokens) for c in together] == [0, 6, 0, 0]  # the rambler: its best live beam at max_len
    # The three quick images have two finished hypotheses after two steps; from then on the
    # decoder is stepped for the rambler's two beams only.
    assert decoder.rows_per_step[0] == 8 and decoder.rows_per_step[-1] == 2, decoder.rows_per_step
