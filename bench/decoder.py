"""Decoder: training tokens/s against its FLOP bound, and captioning photos/s with batched beam
search against a per-photo beam loop (the original article decoded one photo at a time); and both
in MKL's reproducible mode, which onenet runs in, against its default mode.

Synthetic inputs of the real shapes: 6,720-d stored features, captions of 6-14 words, vocabularies
the size of the shapes set (48 words) and of Flickr8k's (3,000). Random weights make the decoder
run to the length cap on every photo, the same work for both ways of captioning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Row, device_flops, rate, sync_for
from models.beam import beam_search
from models.captioner import Captioner, CaptionerConfig, pad_batch, training_step

FEATURE_DIM = 6720  # what the default encoder stores per photo


def batch(vocab: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 15, (size,), generator=g).tolist()
    tokens = pad_batch([torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths])  # (B, T)
    return torch.randn(size, FEATURE_DIM, generator=g).to(device), tokens.to(device)


def model(vocab: int, device: torch.device) -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(feature_dim=FEATURE_DIM, vocab_size=vocab)).to(device)


def flops_per_step(vocab: int, batch_size: int) -> tuple[float, int]:
    """(FLOPs of one training step, target tokens in it), counted on CPU (cuDNN's fused RNN hides
    its FLOPs from the counter; the arithmetic is the same on every device)."""
    cpu = torch.device("cpu")
    m, (feats, tokens) = model(vocab, cpu), batch(vocab, batch_size, cpu)
    optimiser = torch.optim.Adam(m.parameters())
    with FlopCounterMode(display=False) as counter:
        _, n = training_step(m, optimiser, feats, tokens)
    return counter.get_total_flops(), n


def training_rate(vocab: int, batch_size: int, device: torch.device, steps: int) -> float:
    m = model(vocab, device).train()
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-3)
    batches = [batch(vocab, batch_size, device, seed) for seed in range(4)]
    training_step(m, optimiser, *batches[0])  # warm-up
    sync = sync_for(device)
    sync()
    started, tokens = time.perf_counter(), 0
    for s in range(steps):
        tokens += training_step(m, optimiser, *batches[s % 4])[1]
    sync()
    return rate(tokens, time.perf_counter() - started)


def captioning_rates(vocab: int, device: torch.device, n_batched: int, n_single: int, beam: int = 3) -> tuple[float, float]:
    m = model(vocab, device).eval()
    vecs = torch.randn(n_batched, 300, device=device)
    sync = sync_for(device)
    beam_search(m, vecs[:4], beam_size=beam)  # warm-up
    started = time.perf_counter()
    for s in range(0, n_batched, 512):  # as models/beam.caption_vectors does
        beam_search(m, vecs[s : s + 512], beam_size=beam)
    sync()
    batched = rate(n_batched, time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(n_single):
        beam_search(m, vecs[i : i + 1], beam_size=beam)
    sync()
    return batched, rate(n_single, time.perf_counter() - started)


_MODE_PROBE = """
import json, torch
from bench.decoder import captioning_rates, training_rate
cpu = torch.device("cpu")
print(json.dumps({"training": training_rate(3000, 64, cpu, steps=12), "captioning": captioning_rates(3000, cpu, 512, 1)[0]}))
"""


def mkl_mode_rates(mode: str) -> dict:
    """Training tokens/s and batched captioning photos/s (vocab 3,000) in a fresh process whose
    MKL runs in `mode` (MKL reads MKL_CBWR once, at its first call; "" = no mode: MKL's default)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _MODE_PROBE], env={**os.environ, "MKL_CBWR": mode}, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mkl_mode_rows(rounds: int = 3) -> list[Row]:
    """What MKL's strict reproducible mode (models/__init__.py: the same bits at any thread count)
    costs, against MKL with no MKL_CBWR at all: the two alternate in fresh processes, best of
    `rounds` each."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for mode in ("", "AUTO,STRICT"):
            rates = mkl_mode_rates(mode)
            best[mode] = {k: max(v, best.get(mode, {}).get(k, 0.0)) for k, v in rates.items()}
    strict, default = best["AUTO,STRICT"], best[""]
    return [
        Row("decoder", "training, vocab 3000, batch 64, MKL_CBWR=AUTO,STRICT (onenet's) vs none", f"{strict['training']:,.0f} tokens/s",
            f"{default['training']:,.0f} tokens/s in MKL's default mode", strict["training"] / default["training"], ">= 0.9x"),
        Row("captioning", "beam 3, vocab 3000, batched, MKL_CBWR=AUTO,STRICT (onenet's) vs none", f"{strict['captioning']:,.0f} photos/s",
            f"{default['captioning']:,.0f} photos/s in MKL's default mode", strict["captioning"] / default["captioning"], ">= 0.9x"),
    ]


def run(bounds: dict, device: torch.device, full: bool) -> list[Row]:
    rows: list[Row] = []
    gpu = device.type == "cuda"
    flops = device_flops(bounds, device)
    for vocab in (48, 3000):
        for batch_size in (64, 256):
            step_flops, step_tokens = flops_per_step(vocab, batch_size)
            per_token = step_flops / step_tokens
            tokens_s = training_rate(vocab, batch_size, device, steps=(60 if gpu else 12) * 64 // batch_size)
            bound = flops / per_token
            rows.append(Row("decoder", f"training, vocab {vocab}, batch {batch_size} ({per_token / 1e6:.1f} MFLOP/token incl. backward)",
                            f"{tokens_s:,.0f} tokens/s", f"{bound:,.0f} tokens/s FLOP bound", tokens_s / bound, "" if batch_size == 256 else "(pipeline default)"))
    for vocab in (48, 3000):
        batched, single = captioning_rates(vocab, device, n_batched=2048 if gpu else 1024, n_single=64 if gpu else 32)
        rows.append(Row("captioning", f"beam 3, up to 20 words, vocab {vocab}: batched (512 photos per call)",
                        f"{batched:,.0f} photos/s", f"{single:,.1f} photos/s one photo at a time", batched / single, ">= 10x"))
    if device.type == "cpu":
        rows += mkl_mode_rows()
    return rows
