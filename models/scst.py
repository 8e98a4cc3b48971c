"""Self-critical sequence training (Rennie et al. 2017): fine-tune a captioner on CIDEr-D itself.

Cross-entropy teaches the decoder the next word of a human caption; it never sees its own
captions, and what users (and CIDEr) judge is a whole caption. SCST samples captions from the
decoder and pushes up the log-probability of each sample in proportion to how much better its
CIDEr-D is than the caption the decoder would write greedily for the same photo:

    loss = -(CIDEr-D(sample) - CIDEr-D(greedy)) * log p(sample | photo)

The greedy caption is the baseline, so a sample is only rewarded for beating what the model
already does at test time. CIDEr-D's document frequencies come from the training captions (the
corpus the model learns from), not from whatever photos a batch happens to hold.

Everything here works on word ids; `CiderD` reproduces pycocoevalcap's CIDEr-D (clipped term
frequencies, Gaussian length penalty with sigma 6, x10) so the reward is the metric reported.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.captioner import END_ID, PAD_ID, UNK_ID, Captioner, with_end

NGRAMS = 4
SIGMA = 6.0


def _ngrams(tokens: tuple[int, ...]) -> list[Counter]:
    """Counts of the 1..4-grams of one caption, one Counter per n."""
    return [Counter(tokens[i : i + n] for i in range(len(tokens) - n + 1)) for n in range(1, NGRAMS + 1)]


@dataclass
class _Cooked:
    vecs: list[dict]  # per n: n-gram -> tf-idf weight
    norms: list[float]  # per n: the vector's length
    length: int


class CiderD:
    """CIDEr-D of captions (word-id sequences) against each photo's reference captions.

    references: {photo: [caption ids, ...]}: the photos that will be scored (their references are
    cooked once). document_frequency_refs: the reference groups the n-gram document frequencies
    come from (each group counts a photo once per n-gram); by default `references` itself.
    """

    def __init__(self, references: dict[str, list[list[int]]], document_frequency_refs: list[list[list[int]]] | None = None):
        groups = document_frequency_refs if document_frequency_refs is not None else list(references.values())
        df: Counter = Counter()
        for refs in groups:
            df.update({g for ref in refs for counts in _ngrams(tuple(ref)) for g in counts})
        self.log_docs = math.log(float(max(len(groups), 1)))
        self.log_df = {g: math.log(float(max(1, c))) for g, c in df.items()}
        self.refs = {photo: [self._cook(tuple(r)) for r in refs] for photo, refs in references.items()}

    def _cook(self, tokens: tuple[int, ...]) -> _Cooked:
        vecs, norms = [], []
        for counts in _ngrams(tokens):
            vec = {g: tf * (self.log_docs - self.log_df.get(g, 0.0)) for g, tf in counts.items()}
            vecs.append(vec)
            norms.append(math.sqrt(sum(v * v for v in vec.values())))
        return _Cooked(vecs, norms, len(tokens))

    def score(self, photo: str, tokens: list[int]) -> float:
        """CIDEr-D (x10 scale, as pycocoevalcap; x100 of the published tables is 10x this)."""
        hyp, refs = self._cook(tuple(tokens)), self.refs[photo]
        total = 0.0
        for ref in refs:
            penalty = math.exp(-((hyp.length - ref.length) ** 2) / (2 * SIGMA**2))
            for n in range(NGRAMS):
                if not hyp.norms[n] or not ref.norms[n]:
                    continue
                ref_vec = ref.vecs[n]
                dot = sum(min(w, ref_vec[g]) * ref_vec[g] for g, w in hyp.vecs[n].items() if g in ref_vec)
                total += penalty * dot / (hyp.norms[n] * ref.norms[n])
        return 10.0 * total / NGRAMS / max(len(refs), 1)

    def scores(self, photos: list[str], captions: list[list[int]]) -> torch.Tensor:
        return torch.tensor([self.score(p, c) for p, c in zip(photos, captions)])


@torch.no_grad()
def sample(model: Captioner, image_vecs: torch.Tensor, n: int, max_len: int = 20, greedy: bool = False) -> torch.Tensor:
    """n captions per image vector, drawn from the decoder (or its argmax when greedy).

    image_vecs (B, dim) -> (B * n, T) word ids, image-major, padded with PAD_ID after <end>.
    <pad> and <unk> are never drawn (as in beam search).
    """
    vecs = image_vecs.repeat_interleave(n, dim=0)  # (B * n, dim)
    logp, state = model.start(vecs)
    alive = torch.ones(len(vecs), dtype=torch.bool, device=vecs.device)
    out = []
    for _ in range(max_len):
        logp[:, PAD_ID] = float("-inf")
        logp[:, UNK_ID] = float("-inf")
        token = logp.argmax(1) if greedy else torch.multinomial(logp.exp(), 1).squeeze(1)  # (B * n,)
        token = torch.where(alive, token, torch.full_like(token, PAD_ID))
        alive &= token != END_ID
        out.append(torch.where(token == END_ID, torch.full_like(token, PAD_ID), token))
        if not bool(alive.any()):
            break
        logp, state = model.step(token.masked_fill(~alive, END_ID), state)
    return torch.stack(out, dim=1) if out else torch.zeros((len(vecs), 0), dtype=torch.long, device=vecs.device)


def words_of(tokens: torch.Tensor) -> list[list[int]]:
    """(N, T) padded ids -> each caption's words."""
    return [[t for t in row if t != PAD_ID] for row in tokens.tolist()]


def scst_step(
    model: Captioner, optimiser: torch.optim.Optimizer, features: torch.Tensor, photos: list[str], cider: CiderD, samples: int = 5,
    max_len: int = 20, baseline: str = "greedy",
) -> dict:
    """One self-critical update on a batch of photos (features (B, feature_dim), their ids).

    baseline "greedy": a sample's reward minus the greedy caption's (Rennie et al.); "mean": minus
    the mean reward of the photo's other samples (Luo 2020), which centres the advantages even
    when sampling is far worse than greedy decoding.

    Returns the batch's mean sample reward, greedy reward and the loss.
    """
    model.eval()  # no dropout: the captions sampled are those of the policy being improved
    vecs = model.image_vectors(features)  # (B, dim), with gradients for the update below
    greedy = words_of(sample(model, vecs.detach(), 1, max_len, greedy=True))
    drawn = sample(model, vecs.detach(), samples, max_len)  # (B * samples, T)
    repeated = [p for p in photos for _ in range(samples)]
    reward = cider.scores(repeated, words_of(drawn))  # (B * samples,)
    greedy_reward = cider.scores(photos, greedy)
    if baseline == "mean":
        per_photo = reward.view(-1, samples)
        others = (per_photo.sum(1, keepdim=True) - per_photo) / max(samples - 1, 1)
        advantage = (per_photo - others).view(-1).to(features.device)
    else:
        advantage = (reward - greedy_reward.repeat_interleave(samples)).to(features.device)
    if drawn.size(1) == 0:
        return {"reward": 0.0, "greedy_reward": 0.0, "loss": 0.0}

    targets = with_end(drawn)  # (N, T + 1): the sampled words and the <end> that stopped them
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN has no backward in eval mode (CUDA)
        logits = model(vecs.repeat_interleave(samples, dim=0), drawn)  # (N, T + 1, V)
        logp = -F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")  # (N, T + 1)
        mask = targets != PAD_ID
        loss = -(advantage.unsqueeze(1) * logp * mask).sum() / mask.sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimiser.step()
    return {"reward": float(reward.mean()), "greedy_reward": float(greedy_reward.mean()), "loss": loss.item()}
