"""Search by description, the original article's way: invert the captioner.

Freeze the network, start from image vectors near the typical photo, and run gradient descent
on the vectors (not the weights) until the decoder gives the query caption the highest
length-normalised likelihood. All queries and random restarts are optimised as one batch.
A Gaussian prior (mean/std of real image vectors) keeps the answer where real photos live, so
its nearest neighbours are meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.captioner import Captioner


@dataclass
class InversionConfig:
    restarts: int = 8
    steps: int = 300
    lr: float = 0.05  # in units of the prior's std (vectors are optimised standardised)
    prior_weight: float = 0.02
    patience: int = 40  # stop when the best loss has not improved for this many steps
    seed: int = 0


def invert(
    model: Captioner, tokens: torch.Tensor, prior_mean: torch.Tensor, prior_std: torch.Tensor, cfg: InversionConfig | None = None,
    maximise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (Q, T) padded queries -> best image vector per query (Q, dim) and its caption NLL (Q,).

    maximise=True finds the "opposite": the vector, within the prior, whose caption is least
    like the query (the NLL is maximised; use a larger prior_weight to keep it near real photos)."""
    sign = -1.0 if maximise else 1.0
    cfg = cfg or InversionConfig()
    Q, R = tokens.size(0), cfg.restarts
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    z = (0.5 * torch.randn(Q * R, prior_mean.numel(), generator=generator)).to(prior_mean.device)  # (Q*R, dim)
    z.requires_grad_(True)
    repeated = tokens.repeat_interleave(R, dim=0)  # (Q*R, T)
    optimiser = torch.optim.Adam([z], lr=cfg.lr)
    best_loss, best_z, stale = float("inf"), z.detach().clone(), 0
    # cuDNN's RNN refuses backward in eval mode; inverting needs gradients with dropout off.
    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
        for _ in range(cfg.steps):
            nll = model.sequence_nll(prior_mean + z * prior_std, repeated)  # (Q*R,)
            loss = sign * nll + cfg.prior_weight * z.pow(2).mean(1)  # (Q*R,)
            total = loss.sum()
            if total.item() < best_loss - 1e-4:
                best_loss, best_z, stale = total.item(), z.detach().clone(), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
        with torch.no_grad():
            vectors = prior_mean + best_z * prior_std  # (Q*R, dim)
            nll = model.sequence_nll(vectors, repeated).view(Q, R)  # (Q, R)
    pick = (sign * nll).argmin(dim=1)  # best restart per query
    return vectors.view(Q, R, -1)[torch.arange(Q), pick], nll[torch.arange(Q), pick]
