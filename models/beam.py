"""Batched beam search over many images at once.

Unlike a per-photo loop, one decoder call advances every live beam of every image. Finished
hypotheses (those that emit <end>) are kept apart from the live beams and ranked by
length-normalised log-probability, so a short caption does not win just for being short, and
a long one that ended well is not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.captioner import END_ID, PAD_ID, UNK_ID, Captioner


@dataclass
class Caption:
    tokens: list[int]  # words only, without <end>
    logprob: float  # total log-probability including <end>
    score: float  # logprob / (len + 1) ** alpha: what ranks hypotheses


def _normalised(logprob: float, n_tokens: int, alpha: float) -> float:
    return logprob / (n_tokens**alpha)


@torch.no_grad()
def beam_search(
    model: Captioner, image_vecs: torch.Tensor, beam_size: int = 3, max_len: int = 20, alpha: float = 0.7
) -> list[Caption]:
    """Best caption for each of image_vecs (B, dim). beam_size=1 is greedy decoding."""
    B, K = image_vecs.size(0), beam_size
    logp, h = model.start(image_vecs)  # (B, V), state (L, B, H)
    V = logp.size(1)
    h = _repeat_state(h, K)  # (L, B * K, H)
    logp = logp.repeat_interleave(K, dim=0)  # (B * K, V): all beams start identical...
    live = torch.full((B, K), float("-inf"), device=image_vecs.device)
    live[:, 0] = 0.0  # ...so only beam 0 may expand at the first step
    seqs = torch.zeros((B, K, 0), dtype=torch.long, device=image_vecs.device)
    finished: list[list[Caption]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)

    for t in range(max_len):
        logp = _forbid(logp, seqs.view(B * K, -1))
        cand = live.unsqueeze(2) + logp.view(B, K, V)  # (B, K, V)
        top, flat = cand.view(B, -1).topk(2 * K, dim=1)  # (B, 2K): enough to refill K live beams
        beam, token = flat // V, flat % V  # (B, 2K)
        ends = token == END_ID
        # Candidates in the top K that end are complete hypotheses: keep them aside.
        for b, j in (ends[:, :K] & ~done.to(ends.device).unsqueeze(1)).nonzero().tolist():
            words = seqs[b, beam[b, j]].tolist()
            lp = top[b, j].item()
            finished[b].append(Caption(words, lp, _normalised(lp, len(words) + 1, alpha)))
        # Refill the live beams with the best K candidates that did not end.
        order = (ends.long() * 2 * K + torch.arange(2 * K, device=ends.device)).argsort(dim=1)[:, :K]  # (B, K)
        beam, token, live = beam.gather(1, order), token.gather(1, order), top.gather(1, order)
        seqs = torch.cat([seqs.gather(1, beam.unsqueeze(2).expand(-1, -1, seqs.size(2))), token.unsqueeze(2)], dim=2)
        done |= torch.tensor([len(f) >= K for f in finished])
        if bool(done.all()):
            break
        source = (beam + torch.arange(B, device=beam.device).unsqueeze(1) * K).view(-1)  # (B * K,)
        logp, h = model.step(token.view(-1), _select_state(h, source))

    best = []
    for b in range(B):
        pool = finished[b] or [  # nothing ended within max_len: fall back to the live beams
            Caption(seqs[b, k].tolist(), live[b, k].item(), _normalised(live[b, k].item(), seqs.size(2), alpha))
            for k in range(K)
        ]
        best.append(max(pool, key=lambda c: c.score))
    return best


def _forbid(logp: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Never emit <pad> or <unk>, and never repeat the previous word ("red red circle")."""
    logp = logp.clone()
    logp[:, PAD_ID] = float("-inf")
    logp[:, UNK_ID] = float("-inf")
    if seqs.size(1):
        logp.scatter_(1, seqs[:, -1:], float("-inf"))
    return logp


def _repeat_state(h, k: int):
    if isinstance(h, tuple):  # LSTM: (h, c)
        return tuple(x.repeat_interleave(k, dim=1) for x in h)
    return h.repeat_interleave(k, dim=1)


def _select_state(h, index: torch.Tensor):
    if isinstance(h, tuple):
        return tuple(x.index_select(1, index) for x in h)
    return h.index_select(1, index)
