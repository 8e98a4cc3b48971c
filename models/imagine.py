"""Imagine: a picture for a description, by searching and optimising the input of the frozen network.

The input optimisation of write-up [E], aimed at a caption instead of a class: the *picture* is
changed so that the decoder, reading the image vector the frozen CNN makes of it, gives the
description the highest likelihood (the loss is the caption's mean per-token NLL).

Started from noise, plain pixel descent stalls on this network (NLL ~1.6 after hundreds of steps,
versus ~0.1 for a real photo of the scene) and what it finds is coloured static. So the picture
is built coarse to fine, each stage a stronger prior than the next:

1. layout search: a background and `blobs` super-ellipses in colours of the collection's palette.
   Every discrete choice is made by trying all its options through the network and keeping the
   likeliest (forward passes only): first the (background, object) colour pair with one big
   centred object, then that object's position, size and roundness, then for each further blob
   its colour (the background's colour: no blob), place and size.
2. polish: the layout's geometry is refined by gradient descent from `restarts` small random
   perturbations of it (colours fixed), the likeliest kept, the unpolished layout included.
3. pixels: the sketch becomes free pixel logits, refined at growing resolutions (`scales`) with
   random jitter every step, total variation, and a light blur every few steps; kept only where
   the network finds the result more likely.

Why a search and not gradients for the discrete choices: the first version picked colours with a
straight-through argmax inside gradient descent. Its pictures depended on the CPU (on an AVX-512
machine "a big blue square" came out grey and purple, under AVX2 kernels blue): a last-bit
difference in a convolution flipped one argmax early and the optimisation went elsewhere. A
choice made by comparing the network's NLL for every option is decided by gaps of tenths of nats
or more between colours it tells apart; a near-tie is between options the network reads alike.

Throughout, the CNN features are kept where real photos put them (a soft clamp to
+-`feature_range` standard deviations and a penalty beyond): features no training photo shows
saturate the decoder, and then the gradient vanishes (seen: 1e-30 from a flat grey start).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.captioner import Captioner
from models.encoder import Encoder
from models.picture import ImageDecoder, upsample


@dataclass(frozen=True)
class ImagineConfig:
    size: int = 160  # output pixels (the encoder's input size)
    restarts: int = 4  # polish runs from perturbations of the searched layout (the first unperturbed)
    blobs: int = 3
    sharpness: float = 30.0  # sketch edges: soft (a few pixels), which gives the gradient room to move them
    sketch_steps: int = 40  # polish steps of the layout's geometry
    sketch_lr: float = 0.05
    perturbation: float = 0.3  # polish starts: random shifts of the geometry's parameters
    steps: int = 30  # pixel refinement, spread over the scales (kept per start only if it helps)
    scales: tuple[int, ...] = (40, 80, 160)
    lr: float = 0.05
    jitter: float = 0.04  # largest shift, as a share of the side
    tv_weight: float = 0.5
    blur_every: int = 8  # steps between blurs (0: never)
    feature_weight: float = 1.0
    feature_range: float = 4.0
    target_weight: float = 10.0  # goal loss per unit of (1 - cosine), with a caption encoder
    frames: int = 0  # snapshots of the winning start kept for a strip/GIF
    candidates: int = 8  # image decoder: pictures drawn from the description's nearest photos, the lowest goal loss kept
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


def render(palette: torch.Tensor, background: torch.Tensor, colours: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
           power: torch.Tensor, size: int, sharpness: float) -> torch.Tensor:
    """Soft super-ellipses on a flat background, differentiable in the geometry: (B, 3, S, S) in [0, 1].

    palette (P, 3); background (B,) and colours (B, K) palette indices; centre (B, K, 2) in
    [-1, 1]; radius (B, K) as a share of the half side; power (B, K): 2 a disc .. 8 nearly a square."""
    axis = torch.linspace(-1, 1, size, device=palette.device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1)  # (S, S, 2) as (x, y)
    image = palette[background][:, :, None, None].expand(-1, 3, size, size)  # (B, 3, S, S)
    for k in reversed(range(colours.size(1))):  # the first blob on top: later ones cannot cover it
        p = power[:, k, None, None, None]  # (B, 1, 1, 1)
        distance = ((grid[None] - centre[:, k, None, None]).abs() + 1e-6).pow(p).sum(-1).pow(1 / p[..., 0])  # (B, S, S)
        mask = torch.sigmoid((radius[:, k, None, None] - distance) * sharpness)[:, None]  # (B, 1, S, S)
        image = image * (1 - mask) + palette[colours[:, k]][:, :, None, None] * mask
    return image


@dataclass
class Layout:
    """A batch of sketches: background (B,) and colours (B, K) palette indices; centre (B, K, 2),
    radius (B, K), power (B, K) as `render` takes them."""

    background: torch.Tensor
    colours: torch.Tensor
    centre: torch.Tensor
    radius: torch.Tensor
    power: torch.Tensor

    def picture(self, palette: torch.Tensor, cfg: ImagineConfig) -> torch.Tensor:
        return render(palette, self.background, self.colours, self.centre, self.radius, self.power, cfg.size, cfg.sharpness)

    def repeat(self, n: int) -> "Layout":
        return Layout(*(x.repeat_interleave(n, 0) for x in dataclasses.astuple(self)))

    def pick(self, i: int) -> "Layout":
        return Layout(*(x[i : i + 1] for x in dataclasses.astuple(self)))


# The options the layout search tries (in `render`'s units): where, how big, how round.
PLACES = [(0.0, 0.0)] + [(x, y) for y in (-0.5, 0.0, 0.5) for x in (-0.5, 0.0, 0.5) if (x, y) != (0.0, 0.0)]
RADII = (0.22, 0.42)  # the shapes set's small and big objects, as a share of the half side
POWERS = (2.0, 8.0)  # disc, rounded square


def best_option(encoder: Encoder, model: Captioner, goal: Goal, palette: torch.Tensor, layout: Layout, k: int,
                cfg: ImagineConfig, colours=None, places=None, radii=None, powers=None) -> Layout:
    """Blob `k` of a one-sketch layout tried with every combination of the options given (the
    others as they are): the likeliest sketch. Forward passes only."""
    device = palette.device
    options = [torch.tensor(o, dtype=torch.float32, device=device) if o is not None else None for o in (places, radii, powers)]
    choices = [torch.arange(len(o), device=device) if o is not None else torch.zeros(1, dtype=torch.long, device=device)
               for o in (colours, *options)]
    grid = [g.reshape(-1) for g in torch.meshgrid(*choices, indexing="ij")]  # each (N,)
    batch = layout.repeat(len(grid[0]))
    if colours is not None:
        batch.colours[:, k] = torch.as_tensor(colours, device=device)[grid[0]]
    if options[0] is not None:
        batch.centre[:, k] = options[0][grid[1]]
    if options[1] is not None:
        batch.radius[:, k] = options[1][grid[2]]
    if options[2] is not None:
        batch.power[:, k] = options[2][grid[3]]
    return batch.pick(int(pictures_loss(encoder, model, batch.picture(palette, cfg), goal, cfg).argmin()))


def search_layout(encoder: Encoder, model: Captioner, goal: Goal, palette: torch.Tensor, backgrounds: int, cfg: ImagineConfig) -> Layout:
    """The likeliest sketch found by trying options one choice at a time (see the module notes).
    The background is one of the first `backgrounds` palette colours."""
    P, K, device = len(palette), cfg.blobs, palette.device
    # 1. background and object colour together, one big rounded object in the middle; the object
    #    must stand out from the background (a description names something to draw).
    background, colour = (g.reshape(-1) for g in torch.meshgrid(torch.arange(backgrounds, device=device), torch.arange(P, device=device), indexing="ij"))
    distinct = (palette[background] - palette[colour]).norm(dim=1) > 0.25  # RGB in [0, 1]
    background, colour = background[distinct], colour[distinct]
    N = len(background)
    pairs = Layout(background, colour[:, None].repeat(1, K), torch.zeros(N, K, 2, device=device),
                   torch.full((N, K), RADII[1], device=device), torch.full((N, K), 4.0, device=device))
    pairs.colours[:, 1:] = background[:, None]  # further blobs invisible for now
    layout = pairs.pick(int(pictures_loss(encoder, model, pairs.picture(palette, cfg), goal, cfg).argmin()))
    # 2. that object's place, size and roundness
    layout = best_option(encoder, model, goal, palette, layout, 0, cfg, places=PLACES, radii=RADII, powers=POWERS)
    # 3. each further blob: a colour (the background's: none) and a place, then its size and roundness
    for k in range(1, K):
        layout = best_option(encoder, model, goal, palette, layout, k, cfg, colours=list(range(P)), places=PLACES, radii=[0.3])
        if int(layout.colours[0, k]) != int(layout.background[0]):
            layout = best_option(encoder, model, goal, palette, layout, k, cfg, radii=RADII, powers=POWERS)
    return layout


class Sketch(torch.nn.Module):
    """`restarts` copies of a searched layout whose geometry gradient descent may move; colours
    stay as the search chose them. Parameters are unconstrained; `geometry` maps them into range
    (a blob stays in the picture and cannot vanish)."""

    def __init__(self, layout: Layout, restarts: int, perturbation: float, generator: torch.Generator):
        super().__init__()
        start = layout.repeat(restarts)
        self.register_buffer("background", start.background)
        self.register_buffer("colours", start.colours)
        noise = lambda *shape: perturbation * torch.randn(*shape, generator=generator).to(start.centre.device)  # noqa: E731
        noise_off_first = lambda t: torch.cat([torch.zeros_like(t[:1]), t[1:]])  # start 0: the layout as searched  # noqa: E731
        self.centre = torch.nn.Parameter(torch.atanh(start.centre.clamp(-0.79, 0.79) / 0.8) + noise_off_first(noise(*start.centre.shape)))
        self.radius = torch.nn.Parameter(torch.logit((start.radius - 0.15) / 0.4, eps=1e-3) + noise_off_first(noise(*start.radius.shape)))
        self.roundness = torch.nn.Parameter(torch.logit((start.power - 2) / 6, eps=1e-2) + noise_off_first(noise(*start.power.shape)))

    def geometry(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return 0.8 * torch.tanh(self.centre), 0.15 + 0.4 * torch.sigmoid(self.radius), 2 + 6 * torch.sigmoid(self.roundness)

    def forward(self, palette: torch.Tensor, cfg: ImagineConfig) -> torch.Tensor:
        return render(palette, self.background, self.colours, *self.geometry(), cfg.size, cfg.sharpness)


@dataclass
class Goal:
    """What the picture should be: the description's tokens (1, T) and, when the model version has
    a caption encoder, the description's unit vector in image-vector space (dim,)."""

    tokens: torch.Tensor
    target: torch.Tensor | None = None


def goal_loss(model: Captioner, vectors: torch.Tensor, goal: Goal, cfg: ImagineConfig) -> torch.Tensor:
    """(N, dim) image vectors -> (N,) how far each is from the goal: the description's NLL under the
    decoder, plus, with a caption encoder, `target_weight` * (1 - cosine to its vector).

    Two heads of the network, because each alone misleads on pictures unlike the photos: the
    decoder's NLL leans on its language prior (on shapes, an empty black picture is likelier for
    "a big blue square" than a blue blob), and a caption encoder can rank a white blob a hair
    above a blue one (0.02 cosine) where the decoder sees a clear difference. Summed, a colour has
    to convince both, and models trained on different CPUs agree on the pick."""
    nll = model.sequence_nll(vectors, goal.tokens.expand(len(vectors), -1))
    if goal.target is None:
        return nll
    return nll + cfg.target_weight * (1 - F.normalize(vectors, dim=1) @ goal.target)


def picture_loss(encoder: Encoder, model: Captioner, image: torch.Tensor, goal: Goal, cfg: ImagineConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 3, S, S) in [0, 1] -> (goal loss, feature-range penalty), each (R,)."""
    pooled = model.image_features(encoder.pooled_features(encoder.normalise(image * 255)))  # (R, feature_dim)
    z = model.standardised(pooled)
    soft = cfg.feature_range * torch.tanh(z / cfg.feature_range)
    return goal_loss(model, model.image_proj(soft), goal, cfg), F.relu(z.abs() - cfg.feature_range).pow(2).mean(1)


@torch.no_grad()
def saved_loss(encoder: Encoder, model: Captioner, image: torch.Tensor, goal: Goal, cfg: ImagineConfig) -> torch.Tensor:
    """The goal loss of the picture as it will be saved (8-bit), no clamping: (R,)."""
    return goal_loss(model, saved_vectors(encoder, model, image), goal, cfg)


@torch.no_grad()
def saved_vectors(encoder: Encoder, model: Captioner, image: torch.Tensor) -> torch.Tensor:
    """(R, 3, S, S) in [0, 1] -> (R, dim) image vectors of the 8-bit pictures."""
    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8)
    return model.image_vectors(encoder.features(pixels))


@torch.no_grad()
def draw_best(decoder: ImageDecoder, encoder: Encoder, model: Captioner, candidates: torch.Tensor, goal: Goal, cfg: ImagineConfig
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The image decoder's pictures of `candidates` (K, dim) image vectors, read back through the
    frozen CNN (at `cfg.size`) and the captioner; the one with the lowest goal loss is kept, as
    an image generator reranks its samples by a model of text and image (DALL-E by CLIP).
    Returns (picture (3, s, s) uint8 at the decoder's size, its image vector (dim,), its index).

    One picture per description is a draw the network may misread: shapes' "a big green circle"
    drawn green and round is captioned "a purple circle and a red star". The description's 8
    nearest photos, drawn and reread, leave the network a choice."""
    small = decoder.draw(candidates)  # (K, 3, s, s)
    vectors = model.image_vectors(encoder.features(upsample(small, cfg.size)))  # (K, dim)
    best = int(goal_loss(model, vectors, goal, cfg).argmin())
    return small[best], vectors[best], best


def flat_pixels(pixels: torch.Tensor, tolerance: float = 0.06) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (N, 3) the pixels inside flat regions: within `tolerance` of all four
    neighbours in every channel. Edges, where two colours blend into a third that nothing in
    the picture has (blue over black: navy), are left out of a palette."""
    x = pixels[:, 1:-1, 1:-1]
    close = torch.ones(x.shape[1:], dtype=torch.bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = pixels[:, 1 + dy : pixels.size(1) - 1 + dy, 1 + dx : pixels.size(2) - 1 + dx]
        close &= ((x - neighbour).abs() <= tolerance).all(0)
    return x[:, close].T


def palette_of(pixels: torch.Tensor, colours: int = 16, levels: int = 8, min_share: float = 0.001) -> torch.Tensor:
    """(N, 3) RGB samples in [0, 1] -> (colours, 3) a collection's palette: its most common colour,
    then again and again the colour farthest from those already taken (farthest-point sampling).

    Colours are binned first (`levels` per channel; bins under `min_share` of the samples are
    noise and left out) and each bin stands for the mean of its pixels. Unlike k-means over
    pixels, where backgrounds own most centres, a small object's colour gets into the palette
    as soon as it is far from the others; and every step is integer counting or a comparison of
    clear distances, so the palette is the same on every CPU."""
    pixels = pixels.float().clamp(0, 1)
    bins = (pixels * (levels - 1)).round().long()  # (N, 3)
    key = (bins[:, 0] * levels + bins[:, 1]) * levels + bins[:, 2]  # (N,)
    counts = torch.bincount(key, minlength=levels**3)
    sums = torch.zeros(levels**3, 3).index_add_(0, key, pixels)
    kept = (counts >= max(1, min_share * len(pixels))).nonzero().squeeze(1)
    means, counts = sums[kept] / counts[kept, None], counts[kept]
    chosen = [int(counts.argmax())]
    distance = (means - means[chosen[0]]).norm(dim=1)
    while len(chosen) < min(colours, len(means)):
        chosen.append(int(distance.argmax()))
        distance = torch.minimum(distance, (means - means[chosen[-1]]).norm(dim=1))
    return means[chosen]


@torch.no_grad()
def pictures_loss(encoder: Encoder, model: Captioner, pictures: torch.Tensor, goal: Goal, cfg: ImagineConfig, batch: int = 64) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N,) the loss imagine minimises (goal + feature-range penalty), in batches."""
    out = []
    for s in range(0, len(pictures), batch):
        loss, outside = picture_loss(encoder, model, pictures[s : s + batch], goal, cfg)
        out.append(loss + cfg.feature_weight * outside)
    return torch.cat(out)


def refine_pixels(encoder: Encoder, model: Captioner, goal: Goal, start: torch.Tensor, start_loss: torch.Tensor, cfg: ImagineConfig,
                  generator: torch.Generator, step: int = 0, snapshot_at: set | None = None, history: list | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3: `cfg.steps` of free-pixel descent from `start` (R, 3, S, S) in [0, 1], at growing
    resolutions (`cfg.scales`), with jitter, total variation and a light blur every few steps.
    Kept per picture only where it lowers the saved picture's loss (`start_loss`, (R,)): returns
    (pictures, their losses)."""
    if not cfg.steps:
        return start, start_loss
    per_scale = [cfg.steps // len(cfg.scales) + (1 if i < cfg.steps % len(cfg.scales) else 0) for i in range(len(cfg.scales))]
    logits = torch.logit(start.clamp(0.01, 0.99))
    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():  # cuDNN's RNN: no backward in eval mode
        for scale, n_steps in zip(cfg.scales, per_scale):
            logits = F.interpolate(logits.detach(), size=(scale, scale), mode="bilinear", align_corners=False, antialias=scale < logits.size(-1))
            logits.requires_grad_(True)
            optimiser = torch.optim.Adam([logits], lr=cfg.lr)
            for _ in range(n_steps):
                image = torch.sigmoid(F.interpolate(logits, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False))  # (R, 3, S, S)
                fit, outside = picture_loss(encoder, model, jitter(image, int(cfg.jitter * cfg.size), generator), goal, cfg)
                loss = (fit + cfg.feature_weight * outside + cfg.tv_weight * total_variation(image)).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                    with torch.no_grad():
                        logits.copy_(blur(logits))
                if snapshot_at and step in snapshot_at:
                    history.append(image.detach())
                step += 1
    image = torch.sigmoid(F.interpolate(logits.detach(), size=(cfg.size, cfg.size), mode="bilinear", align_corners=False))
    refined_loss = saved_loss(encoder, model, image, goal, cfg)
    worse = start_loss < refined_loss
    return torch.where(worse[:, None, None, None], start, image), torch.minimum(start_loss, refined_loss)


def refine_picture(encoder: Encoder, model: Captioner, goal: Goal, pixels: torch.Tensor, cfg: ImagineConfig) -> torch.Tensor:
    """A picture (3, S, S) uint8 (the image decoder's, models/picture.py) refined by `cfg.steps`
    of stage 3 through the CNN and captioner; returned as it was where that does not help."""
    for p in encoder.net.parameters():
        p.requires_grad_(False)
    start = pixels[None].to(goal.tokens.device).float() / 255
    image, _ = refine_pixels(encoder, model, goal, start, saved_loss(encoder, model, start, goal, cfg), cfg,
                             torch.Generator(device="cpu").manual_seed(cfg.seed))
    return (image[0] * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def imagine(encoder: Encoder, model: Captioner, goal: Goal, palette: torch.Tensor, backgrounds: torch.Tensor | None = None,
            cfg: ImagineConfig | None = None) -> Imagined:
    """A description (`goal`) -> the picture the network finds closest to it (see `goal_loss`).

    palette: (P, 3) colours in [0, 1] for objects (`palette_of` the collection's photos);
    backgrounds: (B, 3) colours a background may have (`palette_of` their borders; default: any
    palette colour). Left free, the search paints the background in the object's colour: this
    CNN pools features over a coarse grid, so a colour everywhere outweighs an object."""
    cfg = cfg or ImagineConfig()
    device = goal.tokens.device
    backgrounds = palette if backgrounds is None else backgrounds
    n_backgrounds = len(backgrounds)
    palette = torch.cat([backgrounds, palette]).to(device)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    R = cfg.restarts
    for p in encoder.net.parameters():
        p.requires_grad_(False)
    total = cfg.sketch_steps + cfg.steps
    snapshot_at = set(torch.linspace(0, total - 1, cfg.frames).round().long().tolist()) if cfg.frames else set()
    history: list[torch.Tensor] = []  # (R, 3, S, S) snapshots; the winner's are kept
    step = 0

    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():  # cuDNN's RNN: no backward in eval mode
        layout = search_layout(encoder, model, goal, palette, n_backgrounds, cfg)
        sketch = Sketch(layout, R, cfg.perturbation, generator)
        optimiser = torch.optim.Adam(sketch.parameters(), lr=cfg.sketch_lr)
        for _ in range(cfg.sketch_steps):
            image = sketch(palette, cfg)
            loss, outside = picture_loss(encoder, model, image, goal, cfg)
            optimiser.zero_grad(set_to_none=True)
            (loss + cfg.feature_weight * outside).sum().backward()
            optimiser.step()
            if step in snapshot_at:
                history.append(image.detach())
            step += 1
        image = sketch(palette, cfg).detach()
        with torch.no_grad():  # polish is kept per start only where it made the sketch more likely
            searched = layout.picture(palette, cfg).expand_as(image)
            searched_loss, polished_loss = saved_loss(encoder, model, searched, goal, cfg), saved_loss(encoder, model, image, goal, cfg)
            worse = searched_loss < polished_loss
            image = torch.where(worse[:, None, None, None], searched, image)
        sketched, sketched_loss = image, torch.minimum(searched_loss, polished_loss)
        image, loss = refine_pixels(encoder, model, goal, sketched, sketched_loss, cfg, generator, step, snapshot_at, history)
    best = int(loss.argmin())
    with torch.no_grad():
        nll = model.sequence_nll(saved_vectors(encoder, model, image[best : best + 1]), goal.tokens)
    to_uint8 = lambda x: (x[best] * 255).round().clamp(0, 255).to(torch.uint8).cpu()  # noqa: E731
    return Imagined(to_uint8(image), float(nll[0]), [to_uint8(f) for f in history])
