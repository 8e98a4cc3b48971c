"""The model layer on CUDA gives what it gives on CPU (skipped on machines without a GPU).

CI has no GPU; these run where one is lent (`python -m pytest tests/test_cuda.py` there). Each
compares a CUDA computation with the same one on CPU, or runs a training step that only CUDA
can break (cuDNN's RNN has no backward in eval mode: SCST, inversion and imagine need it).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.beam import beam_search
from models.captioner import Captioner, CaptionerConfig, pad_batch
from models.joint import CaptionEncoder
from models.scst import CiderD, scst_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def photos(size: int) -> torch.Tensor:
    """Four real photos (skimage's), squashed to size x size: (4, 3, S, S) uint8."""
    from PIL import Image
    from skimage import data

    arrays = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    pixels = [np.asarray(Image.fromarray(a).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)) for a in arrays]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def test_features_on_cuda_are_the_cpu_features(monkeypatch, record_property):
    """The feature cache is keyed by encoder, not device: a GPU must store what a CPU would."""
    from models.encoder import load_encoder

    monkeypatch.setenv("ONENET_BACKEND", "torch")
    pixels = photos(160)
    cpu = load_encoder("efficientnet-lite0").features(pixels)
    gpu = load_encoder("efficientnet-lite0").to(CUDA).features(pixels.to(CUDA)).cpu()
    difference = (gpu - cpu).abs().max().item()
    record_property("measured", f"max |CUDA - CPU| feature difference {difference:.2e}")
    assert difference < 1e-3, difference


def tiny_captioner(device: torch.device) -> Captioner:
    """test_models' tiny captioner, with a third word the SCST reward below can learn to drop."""
    from test_models import tiny_trained_captioner

    return tiny_trained_captioner(device, ([3, 4, 7], [5, 6]), steps=100)[0].train().requires_grad_(True)


def test_beam_search_writes_the_same_captions_on_cuda_and_cpu():
    model = tiny_captioner(CPU).eval()
    vecs = model.image_vectors(torch.randn(64, 8))
    on_cpu = [c.tokens for c in beam_search(model, vecs, beam_size=3)]
    on_cuda = [c.tokens for c in beam_search(model.to(CUDA), vecs.to(CUDA), beam_size=3)]
    assert np.mean([a == b for a, b in zip(on_cpu, on_cuda)]) >= 0.95


def test_self_critical_steps_run_and_raise_the_reward_on_cuda():
    model = tiny_captioner(CUDA)
    features = torch.cat([torch.randn(16, 8) * 0.1 + 1, torch.randn(16, 8) * 0.1 - 1]).to(CUDA)
    photos_ = [f"p{i}" for i in range(32)]
    # the reward prefers "a b" without the third word for the first kind of photo
    cider = CiderD({p: [[3, 4]] * 5 if i < 16 else [[5, 6]] * 5 for i, p in enumerate(photos_)})
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = scst_step(model, optimiser, features, photos_, cider, samples=5)
    for _ in range(30):
        last = scst_step(model, optimiser, features, photos_, cider, samples=5)
    assert last["greedy_reward"] > first["greedy_reward"], (first, last)


@pytest.mark.parametrize("kind", ["infonce", "max-violation"])
def test_caption_encoder_loss_is_the_same_on_cuda(kind):
    torch.manual_seed(0)
    encoder = CaptionEncoder(torch.randn(50, 16) * 0.05, hidden=32)
    tokens = pad_batch([[int(t) for t in torch.randint(3, 50, (int(n),))] for n in torch.randint(2, 9, (24,))])
    images = F.normalize(torch.randn(24, 16), dim=-1)
    on_cpu = encoder.loss(tokens, images, kind=kind)
    encoder.to(CUDA)
    on_cuda = encoder.loss(tokens.to(CUDA), images.to(CUDA), kind=kind)
    assert on_cuda.item() == pytest.approx(on_cpu.item(), rel=1e-4, abs=1e-5)
    on_cuda.backward()  # and it trains there
    assert encoder.proj.weight.grad is not None and torch.isfinite(encoder.proj.weight.grad).all()


def test_imagine_runs_on_cuda():
    from models.encoder import load_encoder
    from models.imagine import Goal, ImagineConfig, imagine

    encoder = load_encoder("efficientnet-lite0").to(CUDA)
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(feature_dim=encoder.feature_dim(64), vocab_size=9)).to(CUDA).eval()
    palette = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0]])
    cfg = ImagineConfig(size=64, scales=(32, 64), restarts=2, sketch_steps=4, steps=4)
    result = imagine(encoder, model, Goal(torch.tensor([[3, 4]], device=CUDA)), palette, cfg=cfg)
    assert result.pixels.shape == (3, 64, 64) and result.pixels.dtype == torch.uint8
