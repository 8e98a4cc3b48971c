"""Batched beam search over many images at once.

Unlike a per-photo loop, one decoder call advances every live beam of every image. Finished
hypotheses (those that emit <end>) are kept apart from the live beams and ranked by
length-normalised log-probability, so a short caption does not win just for being short, and
a long one that ended well is not dropped. Repeated words and repeated three-word sequences are
never extended (see `_forbid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.captioner import END_ID, PAD_ID, UNK_ID, Captioner, Decoding, Ensemble


@dataclass
class Caption:
    tokens: list[int]  # words only, without <end>
    logprob: float  # total log-probability including <end>
    score: float  # logprob / (len + 1) ** alpha: what ranks hypotheses


def _normalised(logprob: float, n_tokens: int, alpha: float) -> float:
    return logprob / (n_tokens**alpha)


@torch.no_grad()
def beam_search(
    model: Captioner | Ensemble, image_vecs: torch.Tensor, beam_size: int = Decoding.beam_size, max_len: int = Decoding.max_len,
    alpha: float = Decoding.length_alpha,
) -> list[Caption]:
    """Best caption for each of image_vecs (B, dim). beam_size=1 is greedy decoding."""
    B, K = image_vecs.size(0), beam_size
    logp, h = model.start(image_vecs)  # (B, V), state: tensors with the batch on dim 1
    V = logp.size(1)
    h = _repeat_state(h, K)  # batch B -> B * K
    logp = logp.repeat_interleave(K, dim=0)  # (B * K, V): all beams start identical...
    live = torch.full((B, K), float("-inf"), device=image_vecs.device)
    live[:, 0] = 0.0  # ...so only beam 0 may expand at the first step
    seqs = torch.zeros((B, K, 0), dtype=torch.long, device=image_vecs.device)
    finished: list[list[Caption]] = [[] for _ in range(B)]
    # The images still decoding: row r of live/seqs/logp (and rows r*K.. of the state) is image
    # active[r]. An image leaves once it has K finished hypotheses (later ones could not enter its
    # pool), so the decoder's steps cost what the unfinished captions need, not the longest one's.
    active = list(range(B))

    for _ in range(max_len):
        n = len(active)
        logp = _forbid(logp, seqs.view(n * K, -1))
        cand = live.unsqueeze(2) + logp.view(n, K, V)  # (n, K, V)
        top, flat = cand.view(n, -1).topk(2 * K, dim=1)  # (n, 2K): enough to refill K live beams
        beam, token = flat // V, flat % V  # (n, 2K)
        ends = token == END_ID
        # Candidates in the top K that end are complete hypotheses: keep them aside.
        for r, j in ends[:, :K].nonzero().tolist():
            words = seqs[r, beam[r, j]].tolist()
            lp = top[r, j].item()
            finished[active[r]].append(Caption(words, lp, _normalised(lp, len(words) + 1, alpha)))
        # Refill the live beams with the best K candidates that did not end.
        order = (ends.long() * 2 * K + torch.arange(2 * K, device=ends.device)).argsort(dim=1)[:, :K]  # (n, K)
        beam, token, live = beam.gather(1, order), token.gather(1, order), top.gather(1, order)
        seqs = torch.cat([seqs.gather(1, beam.unsqueeze(2).expand(-1, -1, seqs.size(2))), token.unsqueeze(2)], dim=2)
        keep = [r for r, b in enumerate(active) if len(finished[b]) < K]
        if not keep:
            break
        source = beam + torch.arange(n, device=beam.device).unsqueeze(1) * K  # (n, K): state rows of the chosen beams
        if len(keep) < n:
            rows = torch.tensor(keep, device=beam.device)
            active = [active[r] for r in keep]
            source, token, live, seqs = source[rows], token[rows], live[rows], seqs[rows]
        logp, h = model.step(token.reshape(-1), _select_state(h, source.reshape(-1)))

    row_of = {b: r for r, b in enumerate(active)}  # images still decoding at max_len
    best = []
    for b in range(B):
        pool = finished[b] or [  # nothing ended within max_len: fall back to the live beams
            Caption(seqs[row_of[b], k].tolist(), live[row_of[b], k].item(), _normalised(live[row_of[b], k].item(), seqs.size(2), alpha))
            for k in range(K)
        ]
        best.append(max(pool, key=lambda c: c.score))
    return best


def _forbid(logp: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Never emit <pad> or <unk>, never repeat the previous word ("red red circle"), and never
    repeat a three-word sequence ("a b a b a": the loop a weak decoder falls into).

    logp (N, V) next-word log-probs of N hypotheses whose words so far are seqs (N, t).
    """
    logp = logp.clone()
    logp[:, PAD_ID] = float("-inf")
    logp[:, UNK_ID] = float("-inf")
    if seqs.size(1):
        logp.scatter_(1, seqs[:, -1:], float("-inf"))
    if seqs.size(1) >= 3:
        # Where the last two words occurred before, the word that followed them is banned.
        seen = (seqs[:, :-2] == seqs[:, -2:-1]) & (seqs[:, 1:-1] == seqs[:, -1:])  # (N, t - 2)
        banned = torch.where(seen, seqs[:, 2:], torch.full_like(seqs[:, 2:], PAD_ID))  # PAD: already banned
        logp.scatter_(1, banned, float("-inf"))
    return logp


def _repeat_state(h, k: int):
    """Every tensor of a (nested) decoding state has the batch on dim 1: repeat each row k times."""
    if isinstance(h, tuple):  # (RNN state, image); an LSTM's RNN state is itself (h, c)
        return tuple(_repeat_state(x, k) for x in h)
    return h.repeat_interleave(k, dim=1)


def _select_state(h, index: torch.Tensor):
    if isinstance(h, tuple):
        return tuple(_select_state(x, index) for x in h)
    return h.index_select(1, index)


def caption_text(words: list[str], tokens: list[int]) -> str:
    return " ".join(words[t] for t in tokens)


@torch.no_grad()
def caption_vectors(model: Captioner, words: list[str], image_vecs: torch.Tensor, decoding: Decoding | None = None, batch_size: int = 512):
    """Captions (text, score) for (N, dim) image vectors, decoded in batches by the model's writer
    (its decoders together, if it has members) with its own decoding settings (`decoding`: other
    ones for this call)."""
    d = decoding or model.decoding
    out = []
    for s in range(0, len(image_vecs), batch_size):
        for c in beam_search(model.writer, image_vecs[s : s + batch_size], beam_size=d.beam_size, max_len=d.max_len, alpha=d.length_alpha):
            out.append((caption_text(words, c.tokens), c.score))
    return out
