"""Imagine, learned: an image decoder from the image-vector space back to pixels.

Optimising the input of the frozen network (models/imagine.py) finds what the network responds
to, not what a person sees. The known remedy is to learn the way back (feature inversion,
Dosovitskiy and Brox 2016): a small convolutional generator from the unit image vector to a
64 x 64 picture, trained on the collection's photos and their image vectors with three losses

- pixels: L1 between the picture and the photo at 64 px, with the pixels that stand out from
  the photo's border colour weighted `salient` times more (objects are a small share of a
  photo; unweighted, a decoder learns backgrounds first and draws objects as faint smudges);
- features: the frozen CNN's pooled features (models/encoder.py `pooled_features`: head, grid
  cells, taps) of the picture vs those of the photo at the same 64 px, both upsampled to
  `feature_size` and standardised over the photos (smooth L1): what the network reads in a
  photo. On shapes it is what gets colours right at all.
- the image vector (`VectorReader`), in a last phase (`align_photos`): 1 - cosine between what
  the network reads from the picture (the frozen CNN at the model's own input size, then the
  captioner's linear layer: what search and imagine's judge read) and the vector of what the
  decoder was taught to draw. After the epochs, so the decoder has learnt to draw first: mixed
  into every step from the start it drew blotches the network reads well and a person does not.
  Costly (the CNN at full size, forward and backward), so
  it sees a few batches, not epochs. On Flickr8k it turns soft colour fields, all read alike,
  into pictures the network tells apart.

What it learns to draw is set by `frame`: on collections of things on plain backgrounds (shapes)
a close-up of the subject (`frame_subject`: the photo cropped to what stands out from its border
colour, centred, at one scale). A decoder shown whole scenes cannot know from the vector where the
subject stands, and L1 then draws the mean of every place, a blob. Photos are drawn whole.

Inputs are made unit vectors, so a description's vector from the caption encoder (models/joint.py,
also unit) can be decoded like a photo's. Decoded as it is, a description's vector draws a smear
of the scenes it could stand for: the caption encoder's vector points where matching photos lie
but is no photo's vector (cosine ~0.5-0.7 to its own photo). So imagine draws the vectors of the
description's nearest photos instead (a retrieval prior: the role DALL-E 2's prior plays, text
embedding -> image embedding, done by nearest neighbours; their similarity-weighted mean drew
worse on shapes) and keeps the picture the network reads closest to the description
(models/imagine.py `draw_best`). Training on caption vectors as inputs was tried: a regression
decoder then draws the mean of every matching photo (on shapes: flat gray).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

PICTURE_FRAMES = ("subject", "full")


@dataclass(frozen=True)
class PictureConfig:
    """The image decoder and its training schedule (all part of the training task's cache key)."""

    epochs: int = 0  # 0: no image decoder
    size: int = 64  # output side, pixels
    width: int = 192  # channels at 4 x 4; halved at each doubling (at least 16)
    batch_size: int = 32
    lr: float = 2e-3
    salient: float = 8.0  # extra pixel-loss weight where the photo differs from its border colour
    feature_weight: float = 0.2  # weight of the feature loss beside the pixel loss (0: pixels only)
    feature_size: int = 96  # the picture and photo are upsampled to this for the CNN
    # the alignment phase after the epochs (`VectorReader`): this many training photos, once, with
    # the image-vector loss at `align_weight` beside the pixel loss, at a quarter of `lr` (0: none;
    # the CNN at full size forward and backward: ~60 ms a photo at 224 px on 2 cores)
    align_photos: int = 0
    align_weight: float = 1.0
    # "subject": learn to draw a close-up of what stands out from the photo's border colour
    # (`frame_subject`; for collections on plain backgrounds such as shapes, where a decoder of
    # whole scenes draws blobs); "full": the whole photo (photos)
    frame: str = "subject"
    seed: int = 0


class UpBlock(nn.Module):
    """Nearest x2 upsampling, then `convs` 3x3 convolutions, each with batch norm and LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, convs: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        for k in range(convs):
            layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ImageDecoder(nn.Module):
    """(B, dim) vectors -> (B, 3, size, size) pictures in [0, 1]. Vectors are made unit first."""

    def __init__(self, dim: int, size: int = 64, width: int = 256):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"picture size must be a power of two of at least 8, not {size}")
        self.dim, self.size, self.width = dim, size, width
        self.start = nn.Sequential(nn.Linear(dim, width * 16), nn.LeakyReLU(0.2, inplace=True))
        # Two convolutions per block up to 16 x 16, where layout is decided; one above, where the
        # block only sharpens (the 64 x 64 block would otherwise cost most of the decoder's time).
        blocks, c, side = [], width, 4
        while side < size:
            side *= 2
            blocks.append(UpBlock(c, max(16, c // 2), 2 if side <= 16 else 1))
            c = max(16, c // 2)
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = self.start(F.normalize(vectors, dim=1)).view(-1, self.width, 4, 4)
        return torch.sigmoid(self.to_rgb(self.blocks(x)))

    @torch.no_grad()
    def draw(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, 3, size, size) uint8, in eval mode."""
        training = self.training
        self.eval()
        try:
            return (self(vectors) * 255).round().clamp(0, 255).to(torch.uint8)
        finally:
            self.train(training)

    def checkpoint(self, cfg: PictureConfig) -> dict:
        return {"state": self.state_dict(), "dim": self.dim, "size": self.size, "width": self.width, "config": asdict(cfg)}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "ImageDecoder":
        decoder = cls(checkpoint["dim"], checkpoint["size"], checkpoint["width"])
        decoder.load_state_dict(checkpoint["state"])
        return decoder.eval()


def upsample(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, s, s) uint8 pictures -> (B, 3, size, size) uint8, bilinear: what the CNN is shown."""
    x = F.interpolate(pixels.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def cnn_features(encoder, pictures: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, s, s) pictures in [0, 1] -> the frozen CNN's pooled features of them upsampled
    (bilinear) to `size` px, differentiable in the pictures."""
    x = F.interpolate(pictures, size=(size, size), mode="bilinear", align_corners=False)
    return encoder.pooled_features(encoder.normalise(x * 255))


class FeatureLoss(nn.Module):
    """The frozen CNN as the comparator: standardised pooled features of pictures at `size` px.

    `features` takes (B, 3, s, s) pictures in [0, 1] (any s) and is differentiable in them; the
    statistics are set once from the training photos' own features (`fit`)."""

    def __init__(self, encoder, size: int):
        super().__init__()
        self.encoder, self.size = encoder, size
        self.register_buffer("mean", torch.zeros(encoder.feature_dim(size)))
        self.register_buffer("std", torch.ones(encoder.feature_dim(size)))

    def raw(self, pictures: torch.Tensor) -> torch.Tensor:
        return cnn_features(self.encoder, pictures, self.size)

    def features(self, pictures: torch.Tensor) -> torch.Tensor:
        return (self.raw(pictures) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, photos: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """photos (N, 3, s, s) uint8 -> their standardised features (N, feature_dim), setting the statistics."""
        raw = torch.cat([self.raw(photos[i : i + batch].to(self.mean.device).float() / 255) for i in range(0, len(photos), batch)])
        self.mean.copy_(raw.mean(0))
        self.std.copy_(raw.std(0).clamp_min(1e-3))
        return (raw - self.mean) / self.std


class VectorReader(nn.Module):
    """What the network reads from a picture: (B, 3, s, s) pictures in [0, 1] (any s) -> (B, dim)
    unit image vectors, through the frozen CNN at `size` (the model's input size) and the
    captioner's image projection (`project`: CNN features -> image vector). Differentiable in the
    pictures; nothing in it is trained."""

    def __init__(self, encoder, project, size: int):
        super().__init__()
        self.encoder, self.project, self.size = encoder, project, size

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(cnn_features(self.encoder, pictures, self.size)), dim=1)


def border_colour(photos: torch.Tensor) -> torch.Tensor:
    """(B, 3, s, s) -> (B, 3): each photo's border colour, the median of its two outer rows and columns."""
    border = torch.cat([photos[..., :2, :].flatten(2), photos[..., -2:, :].flatten(2), photos[..., :, :2].flatten(2), photos[..., :, -2:].flatten(2)], 2)
    return border.median(2).values


def salience(photos: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """(B, 3, s, s) in [0, 1] -> (B, 1, s, s): 1 where a pixel differs from the photo's border
    colour (`border_colour`) by more than `threshold` in a channel."""
    return ((photos - border_colour(photos)[..., None, None]).abs().amax(1, keepdim=True) > threshold).float()


def frame_subject(photos: torch.Tensor, size: int, margin: float = 0.3, least: float = 0.45) -> torch.Tensor:
    """(N, 3, S, S) uint8 photos -> (N, 3, size, size) uint8 close-ups of their subjects.

    Each photo is cropped to the smallest square centred on everything that stands out from its
    border colour (`salience`), widened by `margin` of its side on each edge and at least `least`
    of the photo's side (so a small subject stays smaller than a big one), then resized
    (antialiased). Where the square runs past the photo's edge it is filled with the border
    colour, so the subject stays centred. A photo with nothing standing out is kept whole.

    Why: a decoder trained on whole scenes must guess where the subject stands, and an L1 decoder
    that cannot know draws the average of every place, a blob. Framed, every "a big red triangle"
    is drawn in the same place at the same scale."""
    out = torch.empty(len(photos), 3, size, size, dtype=torch.uint8)
    side_of = photos.shape[-1]
    for i, photo in enumerate(photos):
        x = photo.float()
        marked = salience(x[None] / 255)[0, 0]
        rows, cols = marked.any(1).nonzero(), marked.any(0).nonzero()
        if len(rows) == 0:
            crop = x
        else:
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            side = max(round(max(y1 - y0, x1 - x0) * (1 + 2 * margin)), round(least * side_of))
            top, left = (y0 + y1 - side) // 2, (x0 + x1 - side) // 2
            crop = border_colour(x[None])[0][:, None, None].repeat(1, side, side)
            sy, sx = max(0, top), max(0, left)
            ey, ex = min(side_of, top + side), min(side_of, left + side)
            crop[:, sy - top : ey - top, sx - left : ex - left] = x[:, sy:ey, sx:ex]
        out[i] = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return out


def picture_loss(decoder: ImageDecoder, comparator: FeatureLoss | None, vectors: torch.Tensor, photos: torch.Tensor,
                 photo_features: torch.Tensor | None, cfg: PictureConfig, reader: VectorReader | None = None,
                 targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted pixel L1, feature smooth-L1, image-vector 1 - cosine) of decoding `vectors`
    against `photos` ((B, 3, s, s) in [0, 1]); the last only with a `reader`, against `targets`
    ((B, dim) unit: the vectors of what the decoder is taught to draw)."""
    pictures = decoder(vectors)
    weight = 1 + cfg.salient * salience(photos)
    pixel = ((pictures - photos).abs() * weight).mean() / weight.mean()
    zero = torch.zeros((), device=pixel.device)
    feature = F.smooth_l1_loss(comparator.features(pictures), photo_features) if comparator is not None and cfg.feature_weight else zero
    if reader is None or targets is None:
        return pixel, feature, zero
    return pixel, feature, 1 - (reader(pictures) * targets).sum(1).mean()


def colour_share(pixels: torch.Tensor, colour: tuple[int, int, int], within: float = 60.0, palette: list[tuple[int, int, int]] | None = None) -> float:
    """(3, H, W) uint8 -> the share of pixels within `within` RGB units of `colour` (and, with a
    palette, nearer to it than to any other palette colour)."""
    x = pixels.permute(1, 2, 0).reshape(-1, 3).float()
    distance = (x - torch.tensor(colour, dtype=torch.float32)).norm(dim=1)
    close = distance < within
    if palette:
        others = torch.stack([(x - torch.tensor(c, dtype=torch.float32)).norm(dim=1) for c in palette if tuple(c) != tuple(colour)], 1)
        close &= distance <= others.min(1).values
    return float(close.float().mean())
