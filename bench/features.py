"""Feature extraction: photos/s end to end (decode + resize + CNN) against the original article's
way (one photo at a time, full decode, unbatched) and against the encoder's FLOP bound.

Inputs: the shapes scenes the pipeline trains on (128 px PNG, fed at 160 px), the same scenes as
Flickr-sized JPEGs (500 x 375, fed at 224 px), and in --full mode RSICD's real aerial photos when
../shared/data/rsicd is present.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Row, backend, best_time, device_flops, rate, sync_for
from core.photos import decode_workers, decoded_batches, use_processes
from models.encoder import Encoder, default_batch_size, load_encoder
from models.runtime import openvino_available
from tasks import shapes

RSICD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsicd" / "images"


def write_photos(folder: Path, n: int, kind: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = shapes.scene(7, i).image
        if kind == "png":
            path = folder / f"{i:05d}.png"
            image.save(path)
        else:  # a Flickr-sized JPEG: decoding and resizing cost what they cost on real photos
            path = folder / f"{i:05d}.jpg"
            image.resize((500, 375), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def article_way(encoder: Encoder, paths: list[Path], size: int, device: torch.device) -> float:
    """Photos/s one at a time: open, full decode, resize, CNN on a batch of one, next photo
    (with the plain port of the encoder: BatchNorm not folded)."""
    sync = sync_for(device)
    with torch.no_grad():  # warm-up at this size (a GPU loads its kernels for each new shape)
        encoder.features(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device))
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)).copy()
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device)  # (1, 3, S, S)
        with torch.no_grad():
            encoder.features(x).cpu()
    sync()
    return rate(len(paths), time.perf_counter() - started)


def onenet_way(encoder: Encoder, paths: list[Path], size: int, device: torch.device) -> float:
    """Photos/s as the features task runs: batched CNN, decoding ahead of it (threads or processes)."""
    sync = sync_for(device)
    encoder.features(torch.zeros(default_batch_size(device, size), 3, size, size, dtype=torch.uint8, device=device))  # warm-up
    started = time.perf_counter()
    n = sum(len(positions) for positions, _, _ in encoder.encode_files(paths, size))
    sync()
    assert n == len(paths)
    return rate(n, time.perf_counter() - started)


def cnn_only(encoder: Encoder, size: int, device: torch.device, batch: int, n: int) -> float:
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    calls = max(1, n // batch)
    seconds = best_time(lambda: [encoder.features(pixels) for _ in range(calls)], reps=2, sync=sync_for(device))
    return rate(calls * batch, seconds)


def flops_per_photo(encoder: Encoder, size: int) -> float:
    device = next(encoder.net.parameters()).device
    with FlopCounterMode(display=False) as counter:
        encoder.features(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device))
    return counter.get_total_flops()


def conv_breakdown(encoder: Encoder, size: int, device: torch.device, batch: int) -> Row:
    """Where the CNN's time goes: depthwise convolutions do few FLOPs per byte they move, so they
    run far below the matmul bound; this row says how much of the time and the FLOPs they are."""
    seconds: dict[str, float] = {"depthwise": 0.0, "dense": 0.0}
    flops: dict[str, float] = {"depthwise": 0.0, "dense": 0.0}
    sync = sync_for(device)

    def kind(m: torch.nn.Conv2d) -> str:
        return "depthwise" if m.groups > 1 else "dense"

    def before(m, _):
        sync()
        m.started = time.perf_counter()

    def after(m, inputs, out):
        sync()
        seconds[kind(m)] += time.perf_counter() - m.started
        flops[kind(m)] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    convs = [m for m in encoder.net.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [h for m in convs for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    encoder.features(pixels)
    for d in (seconds, flops):
        d.update(depthwise=0.0, dense=0.0)
    started = time.perf_counter()
    for _ in range(4):
        encoder.features(pixels)
    sync()
    total = time.perf_counter() - started
    for h in hooks:
        h.remove()
    share = flops["depthwise"] / (flops["depthwise"] + flops["dense"])
    return Row("features", f"CNN time in depthwise convs, {size} px (they do {share:.0%} of the FLOPs)",
               f"{seconds['depthwise'] / total:.0%} of CNN time", f"dense convs {seconds['dense'] / total:.0%}")


def decode_only(paths: list[Path], size: int, batch: int) -> float:
    """Photos/s of the decoding stream alone (the same threads or processes the pipeline uses)."""
    started = time.perf_counter()
    n = sum(len(b) for b in decoded_batches(paths, size, batch))
    return rate(n, time.perf_counter() - started)


def inception_v3(device: torch.device, n: int) -> float:
    """The article's encoder (Inception v3 at 299 px, batch 1). Random weights: speed only (the
    pretrained ones cannot be downloaded here, and the weights do not change the speed)."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(device)
    x = torch.randn(1, 3, 299, 299, device=device)
    with torch.no_grad():
        seconds = best_time(lambda: [net(x) for _ in range(n)], reps=1, sync=sync_for(device))
    return rate(n, seconds)


def sharded_way(encoder: Encoder, paths: list[Path], size: int, device: torch.device) -> float:
    """Photos/s as the training flow maps it: one shard per core at once, each on one torch thread
    (models.single_thread: the numbers then do not depend on where a shard ran)."""
    from concurrent.futures import ThreadPoolExecutor

    from models import single_thread

    workers = max(1, torch.get_num_threads())
    shards = [paths[k::workers] for k in range(workers)]

    def encode(shard: list[Path]) -> int:
        with single_thread():
            return sum(len(positions) for positions, _, _ in encoder.encode_files(shard, size))

    encoder.features(torch.zeros(default_batch_size(device, size), 3, size, size, dtype=torch.uint8, device=device))  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        n = sum(pool.map(encode, shards))
    assert n == len(paths)
    return rate(n, time.perf_counter() - started)


def run(bounds: dict, device: torch.device, full: bool) -> list[Row]:
    rows: list[Row] = []
    flops = device_flops(bounds, device)
    gpu = device.type == "cuda"
    n_fast, n_slow = (4096 if gpu else 256), (256 if gpu else 48)
    with tempfile.TemporaryDirectory(prefix="onenet-bench-") as tmp:
        fast, slow = load_encoder(cache_dir=Path(tmp) / "openvino").to(device), load_encoder(fold_batchnorm=False).to(device)
        # CPU: the pipeline's runtime (OpenVINO, models/runtime.py) beside eager PyTorch; a GPU runs PyTorch only
        runtimes = ["torch"] if gpu or not openvino_available() else ["openvino", "torch"]
        inputs = [
            ("shapes PNG 128 px -> 160 px", write_photos(Path(tmp) / "png", n_fast, "png"), 160),
            ("JPEG 500x375 -> 224 px", write_photos(Path(tmp) / "jpg", n_fast // 2, "jpg"), 224),
        ]
        if full and RSICD.is_dir():
            inputs.append(("RSICD aerial JPEG 224 px -> 224 px", sorted(RSICD.glob("*.jpg"))[:2048], 224))
        for label, paths, size in inputs:
            with backend("torch"):
                article = article_way(slow, paths[:n_slow], size, device)
            for name in runtimes:
                with backend(name):
                    onenet = onenet_way(fast, paths, size, device)
                    rows.append(Row("features", f"end to end, {label} ({len(paths)} photos), {name}", f"{onenet:.1f} photos/s",
                                    f"{article:.1f} photos/s one at a time (article's way)", onenet / article, ">= 10x"))
                    if not gpu:
                        shard = sharded_way(fast, paths, size, device)
                        goal = ">= 100 photos/s" if size == 224 and name == "openvino" else ""
                        rows.append(Row("features", f"as the train flow maps it: {torch.get_num_threads()} shards at once, 1 thread each, {label}, {name}",
                                        f"{shard:.1f} photos/s", f"{article:.1f} photos/s article's way", shard / article, goal))
            decode = decode_only(paths, size, default_batch_size(device, size))
            how = "processes" if use_processes(len(paths), decode_workers()) else "threads"
            rows.append(Row("features", f"decode + resize only, {label}, {decode_workers()} {how}", f"{decode:.0f} photos/s"))
        for size in (160, 224):
            with backend("torch"):  # FLOPs are counted on the PyTorch graph (the same network)
                per_photo = flops_per_photo(fast, size)
            batch = default_batch_size(device, size)
            bound = flops / per_photo
            for name in runtimes:
                with backend(name):
                    cnn = cnn_only(fast, size, device, batch, n_fast)
                rows.append(Row("features", f"CNN only, {size} px, batch {batch} ({per_photo / 1e9:.2f} GFLOP/photo), {name}",
                                f"{cnn:.1f} photos/s", f"{bound:.0f} photos/s FLOP bound", cnn / bound, ">= 50%"))
            if gpu:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    half = cnn_only(fast, size, device, batch, n_fast)
                bound16 = bounds["gpu_bf16_flops"] / per_photo
                rows.append(Row("features", f"CNN only, {size} px, batch {batch}, bf16 autocast (not the pipeline's default)",
                                f"{half:.1f} photos/s", f"{bound16:.0f} photos/s bf16 FLOP bound", half / bound16))
            if size == 160:
                with backend("torch"):
                    rows.append(conv_breakdown(fast, size, device, batch))
        with backend("torch"):
            slow_cnn = cnn_only(slow, 160, device, 1, 32)
            fast_cnn = cnn_only(fast, 160, device, default_batch_size(device), n_fast // 2)
        rows.append(Row("features", f"CNN only, 160 px, PyTorch: onenet (BatchNorm folded, batch {default_batch_size(device)}) vs a plain port (BatchNorm kept, batch 1)",
                        f"{fast_cnn:.1f} photos/s", f"{slow_cnn:.1f} photos/s plain port", fast_cnn / slow_cnn))
        try:
            inception = inception_v3(device, 8 if not gpu else 64)
        except ImportError:  # torchvision missing (a bare GPU machine): the row is left out
            return rows
        rows.append(Row("features", "the article's encoder alone: Inception v3, 299 px, batch 1 (5.7 GFLOP/photo)",
                        f"{inception:.1f} photos/s", "", None))
    return rows
