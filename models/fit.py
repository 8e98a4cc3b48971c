"""The training loop every trainer shares: the captioner, its self-critical fine-tuning, the
caption encoder and the image decoder.

A trainer supplies its epoch step (train one epoch, measure on validation, log, return a record
of the epoch) and its score of a record (higher is better); `fit` runs the epochs, keeps a copy of
the weights of the best-scoring one, stops early when told, and puts the kept weights back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.errors import OnenetError

log = logging.getLogger("onenet.fit")


def seeded(seed: int) -> np.random.Generator:
    """Seed torch's generator (weight initialisation, dropout, sampling) and return the numpy
    generator of the batches: called once at a trainer's start, before it builds its model, so
    one seed fixes the whole run."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that further training does not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Best:
    """The kept epoch: its number, its score, what its epoch step recorded, and its weights."""

    epoch: int
    score: float
    record: dict
    state: dict[str, torch.Tensor] = field(repr=False)

    @classmethod
    def of(cls, model: nn.Module, epoch: int, score: float, record: dict) -> Best:
        return cls(epoch, score, record, snapshot(model))


def fit(
    model: nn.Module,
    epochs: int,
    run_epoch: Callable[[int], dict],
    score: Callable[[dict], float],
    patience: int = 0,
    start: Best | None = None,
    log: logging.Logger = log,
    name: str = "fit",
) -> tuple[Best, list[dict]]:
    """Run epochs 1..`epochs` of `run_epoch`; keep the epoch whose record scores highest.

    Only a strictly higher score replaces the kept epoch, so of equal scores the first is kept;
    `start` is an epoch 0 to beat (the model as it came), none by default. With `patience`, stop
    once that many epochs have passed since the kept one. The model ends with the kept weights.
    Returns the kept epoch and the record of every epoch run."""
    best, history = start, []
    for epoch in range(1, epochs + 1):
        record = run_epoch(epoch)
        history.append(record)
        value = score(record)
        if value > (best.score if best else -math.inf):
            best = Best.of(model, epoch, value, record)
        elif patience and best is not None and epoch - best.epoch >= patience:
            log.info("%s: no better epoch for %d epochs; stopping early", name, patience)
            break
    if best is None:
        raise OnenetError(f"{name}: no epoch had a score to keep (the loss diverged?)")
    model.load_state_dict(best.state)
    return best, history
