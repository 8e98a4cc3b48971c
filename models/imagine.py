"""Imagine: a picture for a description, by optimising the input of the frozen network.

The input optimisation of write-up [E], aimed at a caption instead of a class: gradient descent
on the *picture* so that the decoder, reading the image vector the frozen CNN makes of it, gives
the description the highest likelihood (the loss is the caption's mean per-token NLL).

Started from noise, plain pixel descent stalls on this network (NLL ~1.6 after hundreds of steps,
versus ~0.1 for a real photo of the scene) and what it finds is coloured static. So the picture
is built coarse to fine, each stage a stronger prior than the next:

1. sketch: a background colour and `blobs` soft super-ellipses (position, size, roundness,
   colour), rendered differentiably, colours mixed from the collection's palette (free colours
   gave a purple background the network read as "black"). This is the coarsest scale of the multiscale scheme: a
   layout the network can read, found in a few dozen steps.
2. pixels: the sketch becomes free pixel logits, refined at growing resolutions (`scales`) with
   random jitter every step, total variation, and a light blur every few steps, so detail is
   added only where it helps and no pattern survives that works at one offset only.

Throughout, the CNN features are kept where real photos put them (a soft clamp to
+-`feature_range` standard deviations and a penalty beyond): features no training photo shows
saturate the decoder, and then the gradient vanishes (seen: 1e-30 from a flat grey start).
`restarts` random starts are optimised as one batch; the most likely picture wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.captioner import Captioner
from models.encoder import Encoder


@dataclass(frozen=True)
class ImagineConfig:
    size: int = 160  # output pixels (the encoder's input size)
    restarts: int = 8
    blobs: int = 3
    sharpness: float = 30.0  # sketch edges: soft (a few pixels), which gives the gradient room to move them
    sketch_steps: int = 100
    sketch_lr: float = 0.1
    steps: int = 30  # pixel refinement, spread over the scales (kept per start only if it helps)
    scales: tuple[int, ...] = (40, 80, 160)
    lr: float = 0.05
    jitter: float = 0.04  # largest shift, as a share of the side
    tv_weight: float = 0.5
    blur_every: int = 8  # steps between blurs (0: never)
    feature_weight: float = 1.0
    feature_range: float = 4.0
    frames: int = 0  # snapshots of the winning start kept for a strip/GIF
    seed: int = 0


@dataclass
class Imagined:
    pixels: torch.Tensor  # (3, size, size) uint8
    nll: float  # mean per-token negative log-likelihood of the description given the picture
    frames: list[torch.Tensor]  # (3, size, size) uint8 snapshots, first to last


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) mean absolute difference of neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))


def blur(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial blur, channel by channel, edges replicated."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.size(1), 1, 3, 3).contiguous()
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.size(1))


def jitter(x: torch.Tensor, largest: int, generator: torch.Generator) -> torch.Tensor:
    """Shift the batch by a random (dy, dx) in [-largest, largest], edges replicated."""
    if largest <= 0:
        return x
    dy, dx = torch.randint(-largest, largest + 1, (2,), generator=generator).tolist()
    padded = F.pad(x, (largest, largest, largest, largest), mode="replicate")
    H, W = x.shape[-2:]
    return padded[..., largest + dy : largest + dy + H, largest + dx : largest + dx + W]


class Sketch(torch.nn.Module):
    """A background and soft super-ellipses, rendered differentiably: (R, 3, S, S) in [0, 1].

    Colours are soft mixtures of a palette (P, 3) taken from the collection's photos, so the
    sketch uses colours the network has seen rather than ones it reads as something else."""

    def __init__(self, restarts: int, blobs: int, palette: torch.Tensor, generator: torch.Generator):
        super().__init__()
        def rand(*shape, scale=1.0):
            return torch.nn.Parameter(scale * torch.randn(*shape, generator=generator))
        P = len(palette)
        self.register_buffer("palette", palette)
        self.background = rand(restarts, P)  # palette logits
        self.centre = rand(restarts, blobs, 2)  # tanh -> [-1, 1]
        self.radius = rand(restarts, blobs)  # sigmoid -> 0.05 .. 0.55 of the half side
        self.colour = rand(restarts, blobs, P)
        self.roundness = rand(restarts, blobs)  # sigmoid -> norm exponent 2 (disc) .. 8 (square)

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, P) palette logits -> (R, 3) the likeliest palette colour, with the gradient of the
        soft mixture (straight-through): a mixture of colours would be a muddy new colour."""
        soft = logits.softmax(-1)
        hard = F.one_hot(soft.argmax(-1), soft.size(-1)).to(soft.dtype)
        return (hard - soft.detach() + soft) @ self.palette

    def forward(self, size: int, sharpness: float = 30.0) -> torch.Tensor:
        axis = torch.linspace(-1, 1, size, device=self.centre.device)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1)  # (S, S, 2) as (x, y)
        image = self.pick(self.background)[:, :, None, None].expand(-1, 3, size, size)
        centre, radius = torch.tanh(self.centre), 0.05 + 0.5 * torch.sigmoid(self.radius)
        power = 2 + 6 * torch.sigmoid(self.roundness)
        for k in range(self.centre.size(1)):
            p = power[:, k, None, None]  # (R, 1, 1)
            distance = ((grid[None] - centre[:, k, None, None]).abs() + 1e-6).pow(p[..., None]).sum(-1).pow(1 / p)  # (R, S, S)
            mask = torch.sigmoid((radius[:, k, None, None] - distance) * sharpness)[:, None]  # (R, 1, S, S)
            image = image * (1 - mask) + self.pick(self.colour[:, k])[:, :, None, None] * mask
        return image


def caption_loss(encoder: Encoder, model: Captioner, image: torch.Tensor, tokens: torch.Tensor, cfg: ImagineConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 3, S, S) in [0, 1] -> (NLL of the description, feature-range penalty), each (R,)."""
    z = (encoder.pooled_features(encoder.normalise(image * 255)) - model.feature_mean) / model.feature_std  # (R, feature_dim)
    soft = cfg.feature_range * torch.tanh(z / cfg.feature_range)
    nll = model.sequence_nll(model.image_proj(soft), tokens)  # (R,)
    return nll, F.relu(z.abs() - cfg.feature_range).pow(2).mean(1)


@torch.no_grad()
def true_nll(encoder: Encoder, model: Captioner, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """NLL of the description for the picture as it will be saved (8-bit), no clamping: (R,)."""
    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8)
    return model.sequence_nll(model.image_vectors(encoder.features(pixels)), tokens)


def palette_of(pixels: torch.Tensor, colours: int = 16, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """(N, 3) RGB samples in [0, 1] -> (colours, 3) k-means centres: a collection's palette."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    pixels = pixels.float()
    centres = pixels[torch.randperm(len(pixels), generator=generator)[:colours]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(pixels, centres).argmin(1)
        for c in range(len(centres)):
            members = pixels[nearest == c]
            if len(members):
                centres[c] = members.mean(0)
    return centres


def imagine(encoder: Encoder, model: Captioner, tokens: torch.Tensor, palette: torch.Tensor, cfg: ImagineConfig | None = None) -> Imagined:
    """tokens (1, T) -> the picture (best of `cfg.restarts`) the network finds most likely to be
    described that way. palette: (P, 3) colours in [0, 1] (`palette_of` the collection)."""
    cfg = cfg or ImagineConfig()
    device = tokens.device
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    R = cfg.restarts
    repeated = tokens.expand(R, -1)  # (R, T)
    for p in encoder.net.parameters():
        p.requires_grad_(False)
    total = cfg.sketch_steps + cfg.steps
    snapshot_at = set(torch.linspace(0, total - 1, cfg.frames).round().long().tolist()) if cfg.frames else set()
    history: list[torch.Tensor] = []  # (R, 3, S, S) snapshots; the winner's are kept
    step = 0

    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():  # cuDNN's RNN: no backward in eval mode
        sketch = Sketch(R, cfg.blobs, palette.to(device), generator).to(device)
        optimiser = torch.optim.Adam(sketch.parameters(), lr=cfg.sketch_lr)
        for _ in range(cfg.sketch_steps):
            image = sketch(cfg.size, cfg.sharpness)
            nll, outside = caption_loss(encoder, model, image, repeated, cfg)
            optimiser.zero_grad(set_to_none=True)
            (nll + cfg.feature_weight * outside).sum().backward()
            optimiser.step()
            if step in snapshot_at:
                history.append(image.detach())
            step += 1
        image = sketch(cfg.size, cfg.sharpness).detach()
        sketched = image

        per_scale = [cfg.steps // len(cfg.scales) + (1 if i < cfg.steps % len(cfg.scales) else 0) for i in range(len(cfg.scales))]
        logits = torch.logit(image.clamp(0.01, 0.99))
        for scale, n_steps in zip(cfg.scales, per_scale):
            logits = F.interpolate(logits.detach(), size=(scale, scale), mode="bilinear", align_corners=False, antialias=scale < logits.size(-1))
            logits.requires_grad_(True)
            optimiser = torch.optim.Adam([logits], lr=cfg.lr)
            for _ in range(n_steps):
                image = torch.sigmoid(F.interpolate(logits, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False))  # (R, 3, S, S)
                nll, outside = caption_loss(encoder, model, jitter(image, int(cfg.jitter * cfg.size), generator), repeated, cfg)
                loss = (nll + cfg.feature_weight * outside + cfg.tv_weight * total_variation(image)).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                    with torch.no_grad():
                        logits.copy_(blur(logits))
                if step in snapshot_at:
                    history.append(image.detach())
                step += 1
        if cfg.steps:
            image = torch.sigmoid(F.interpolate(logits.detach(), size=(cfg.size, cfg.size), mode="bilinear", align_corners=False))

    nll = true_nll(encoder, model, image, repeated)
    if cfg.steps:  # refinement is kept per start only where the network finds it more likely
        before = true_nll(encoder, model, sketched, repeated)
        worse = before < nll
        image, nll = torch.where(worse[:, None, None, None], sketched, image), torch.minimum(before, nll)
    best = int(nll.argmin())
    to_uint8 = lambda x: (x[best] * 255).round().clamp(0, 255).to(torch.uint8).cpu()  # noqa: E731
    return Imagined(to_uint8(image), float(nll[best]), [to_uint8(f) for f in history])
