"""A CPU inference runtime for the frozen encoder: OpenVINO, with PyTorch as the fallback.

Eager PyTorch runs EfficientNet-Lite's depthwise convolutions far below the CPU's FLOP bound;
OpenVINO compiles the whole graph (normalisation, CNN, pooling) for the CPU it finds and runs it
two to three times as fast. The features stay the
same features: fp32 inference (`INFERENCE_PRECISION_HINT=f32`; OpenVINO would pick bf16 by itself
on CPUs that have it), equal to PyTorch's within 1e-5 of the features' scale (tests/test_runtime.py), so the caches, versions
and test results do not depend on the backend. bf16 is an explicit encoder variant
("efficientnet-lite0+bf16"): its features are different, and so is its name in every cache key.

Which backend (ONENET_BACKEND): "auto" (default) = OpenVINO on CPU when the package is
installed, PyTorch otherwise and always on CUDA; "torch"; "openvino" (an error without it).
imagine differentiates through the CNN and so always runs PyTorch (Encoder.pooled_features).

The converted graph is stored once per encoder, input size and code version under the given
cache folder (the workspace's cache/openvino/), so only the first run pays the conversion
(about 5 s); compiling it for this CPU takes a fraction of a second and happens per process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import OnenetError
from core.files import sha256_text
from models import cpu_cores

log = logging.getLogger("onenet.runtime")

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("f32", "bf16")
RUNTIME_LAYOUT = 1  # bump when the exported graph changes (part of the cache key with the code)
_converting = threading.Lock()
_compiling = threading.Lock()
_compiled: dict[tuple[str, str], object] = {}  # (graph key, precision) -> the process's compiled network
_differences: dict[str, float] = {}  # graph key -> its f32 network's largest difference from PyTorch (OpenVinoFeatures._check)
CHECK_TOLERANCE = 1e-4  # of the outputs' scale (at least 1): tests/test_runtime.py holds real photos to 1e-5; this catches a broken build


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """Whether the package is installed (looked up once: Encoder.features asks on every call)."""
    return importlib.util.find_spec("openvino") is not None


@functools.lru_cache(maxsize=1)
def openvino_core():
    """The process's one OpenVINO Core, never released.

    OpenVINO's CPU plugin gives the thread that creates a Core an alternate signal stack (for
    AMX's big signal frames) and unmaps it when that Core goes, restoring the old one on whatever
    thread the Core happens to die in. With a Core per encoder, the main thread was left with an
    unmapped signal stack, and the next signal it handled (Python installs its handlers with
    SA_ONSTACK) killed the process: SIGSEGV, si_code SI_KERNEL (tests/test_runtime.py)."""
    import openvino as ov

    return ov.Core()


def chosen_backend(device: torch.device, precision: str = "f32") -> str:
    """'openvino' or 'torch' for an encoder on `device` (see the module docstring)."""
    wanted = os.environ.get("ONENET_BACKEND", "auto").strip().lower() or "auto"
    if wanted not in BACKENDS:
        raise OnenetError(f"ONENET_BACKEND={wanted!r}: use one of {', '.join(BACKENDS)}")
    if precision != "f32":  # bf16 features exist only through OpenVINO
        if not openvino_available():
            raise OnenetError(f"the {precision} encoder needs the openvino package (pip install openvino)")
        if device.type != "cpu":
            raise OnenetError(f"the {precision} encoder runs on CPU only (OpenVINO); set ONENET_DEVICE=cpu")
        return "openvino"
    if device.type != "cpu" or wanted == "torch":
        return "torch"
    if wanted == "openvino" and not openvino_available():
        raise OnenetError("ONENET_BACKEND=openvino but the openvino package is not installed (pip install openvino)")
    return "openvino" if openvino_available() else "torch"


class _Graph(nn.Module):
    """What OpenVINO compiles: uint8 pixels -> Encoder.features (normalisation and pooling inside)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.net = encoder.net  # registered, so conversion sees the weights as parameters

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled_features(self.encoder.normalise(pixels))


class OpenVinoFeatures:
    """Encoder.features compiled by OpenVINO for one input size: (B, 3, S, S) uint8 -> (B, D) float32.

    One compiled network per graph and process, with one stream (one thread) per core; each photo
    is its own request and the requests of all callers (threads) share the streams. So one caller
    uses every core, shards running at once share them instead of queueing on one, and a photo's
    features never depend on how many threads or shards there were.
    """

    def __init__(self, encoder, size: int, cache_dir: Path | None, precision: str = "f32"):
        if precision not in PRECISIONS:
            raise OnenetError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
        self.size, self.precision = size, precision
        self.core = openvino_core()
        if precision == "bf16" and "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise OnenetError("this CPU has no bf16 instructions: use the f32 encoder (drop '+bf16')")
        self.model, self.key = self._model(encoder, size, cache_dir)
        self._local = threading.local()  # each calling thread has its own requests
        if precision == "f32":
            self._check(encoder)

    def _check(self, encoder) -> None:
        """Compare with PyTorch on a fixed picture, once per graph and process (every ingest
        builds an encoder; the compiled network is the process's): a runtime that computes other
        features on this CPU is refused (Encoder.runtime then falls back to PyTorch). This
        happens, e.g., under ONEDNN_MAX_CPU_ISA, which restricts oneDNN but not OpenVINO's own
        layout choice: the features come out scrambled."""
        if self.key not in _differences:
            pixels = torch.randint(0, 256, (1, 3, self.size, self.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                expected = encoder.pooled_features(encoder.normalise(pixels))
            _differences[self.key] = (self(pixels) - expected).abs().max().item() / max(1.0, expected.abs().max().item())
        difference = _differences[self.key]
        if not difference <= CHECK_TOLERANCE:
            raise RuntimeError(f"its features differ from PyTorch's by {difference:.3g} of their scale on this CPU")

    def _model(self, encoder, size: int, cache_dir: Path | None):
        key = graph_key(encoder, size)
        path = cache_dir / f"{encoder.name}-{size}px-g{encoder.grid}-{key[:16]}.xml" if cache_dir else None
        # The size is fixed (SAME padding is traced for it); the batch is free.
        return converted(_Graph(encoder), torch.zeros(1, 3, size, size, dtype=torch.uint8), {0: [-1, 3, size, size]}, path), key

    def compiled(self):
        """The process's compiled network for this graph and precision (made on first use)."""
        with _compiling:
            name = (self.key, self.precision)
            if name not in _compiled:
                streams = cpu_cores()
                config = {
                    "INFERENCE_PRECISION_HINT": self.precision,
                    "PERFORMANCE_HINT": "THROUGHPUT",
                    "NUM_STREAMS": streams,  # one thread each: a photo's numbers never depend on the thread count
                    "INFERENCE_NUM_THREADS": streams,
                }
                _compiled[name] = self.core.compile_model(self.model, "CPU", config)
            return _compiled[name]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            raise ValueError(f"this runtime was built for {self.size} px, got {tuple(pixels.shape)}")
        compiled = self.compiled()
        if getattr(self._local, "requests", None) is None:  # two per stream: a stream never waits for this thread
            self._local.requests = [compiled.create_infer_request() for _ in range(2 * cpu_cores())]
        requests = self._local.requests
        arrays = np.ascontiguousarray(pixels.numpy())
        out = np.empty((len(arrays), compiled.outputs[0].get_partial_shape()[1].get_length()), np.float32)
        photo_of: list[int | None] = [None] * len(requests)  # what each request is working on

        def collect(k: int) -> None:
            requests[k].wait()
            out[photo_of[k]] = requests[k].get_output_tensor(0).data[0]

        # One photo per request, the requests taken in turn; results are copied out by this thread
        # (no Python callback on OpenVINO's threads: measured ~10% faster with decoding alongside).
        for i in range(len(arrays)):
            k = i % len(requests)
            if photo_of[k] is not None:
                collect(k)
            requests[k].start_async({0: arrays[i : i + 1]})
            photo_of[k] = i
        for k in range(len(requests)):
            if photo_of[k] is not None:
                collect(k)
        return torch.from_numpy(out)


def converted(module: nn.Module, example: torch.Tensor, shape: dict, path: Path | None):
    """`module` as an OpenVINO model: read from `path` when a run converted it before, else traced
    with `example`, given the input `shape` (-1 = any) and kept at `path` (atomically: the graph
    file appears only next to its weights) for the next run."""
    import openvino as ov

    core = openvino_core()
    with _converting:  # shards start together: one converts, the others read its files
        if path is not None and path.exists() and path.with_suffix(".bin").exists():
            return core.read_model(path)
        # features() runs in inference mode, tracing wants plain tensors; the tracer's warnings
        # are about SAME padding computed in Python, which is right for the one size traced, and
        # about torch.jit.trace's deprecation, which OpenVINO's converter still uses.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            model = ov.convert_model(module.eval(), example_input=example)
        model.reshape(shape)
        if path is None:
            return model
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            ov.save_model(model, Path(tmp) / path.name, compress_to_fp16=False)  # graph .xml + weights .bin
            os.replace(Path(tmp) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
            os.replace(Path(tmp) / path.name, path)  # the graph last: it exists only with its weights
        log.info("runtime: converted %s for OpenVINO", path.name)
        return core.read_model(path)  # what later runs read: the first run computes the same numbers


class _QueryGraph(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_unpadded(tokens)


class OpenVinoQueries:
    """The caption encoder on one description, compiled by OpenVINO for latency: (1, T) word ids
    -> (dim,) unit vector, faster than PyTorch for one short query and within 1e-5 of it.

    Compiling takes ~70 ms per process, about what 20 queries save, so `Queries` uses it where a
    process answers many (the explorer; `Queries.open(..., serving=True)`), not for one-off searches.
    """

    def __init__(self, encoder, cache_dir: Path | None):
        key = sha256_text(state_digest(encoder), Path(__file__).read_text(), (Path(__file__).parent / "joint.py").read_text(), openvino_version(), str(RUNTIME_LAYOUT))
        path = cache_dir / f"caption-encoder-{key[:16]}.xml" if cache_dir else None
        example = torch.full((1, 4), 3, dtype=torch.long)
        model = converted(_QueryGraph(encoder), example, {0: [1, -1]}, path)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": cpu_cores()}
        self.request = openvino_core().compile_model(model, "CPU", config).create_infer_request()
        self._lock = threading.Lock()  # one request: one query at a time
        probe = torch.arange(3, 3 + min(12, encoder.embed.num_embeddings - 3)).unsqueeze(0)
        with torch.no_grad():
            difference = np.abs(self(probe) - encoder(probe)[0].numpy()).max()  # what PyTorch answers
        if not difference <= CHECK_TOLERANCE:
            raise RuntimeError(f"its query vectors differ from PyTorch's by {difference:.3g} on this CPU")

    def __call__(self, tokens: torch.Tensor) -> np.ndarray:
        if tokens.shape[0] != 1:
            raise ValueError(f"one query at a time, got {tuple(tokens.shape)}")
        with self._lock:
            self.request.infer({0: np.ascontiguousarray(tokens.cpu().numpy())})
            return self.request.get_output_tensor(0).data[0].copy()


def query_runtime(encoder, cache_dir: Path | None) -> OpenVinoQueries | None:
    """The OpenVINO build of `encoder` for single queries, or None where it does not apply
    (ONENET_BACKEND, not on CPU, no openvino) or could not be built (warned; PyTorch answers)."""
    if chosen_backend(next(encoder.parameters()).device) != "openvino":
        return None
    try:
        return OpenVinoQueries(encoder, cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure here means: answer with PyTorch
        log.warning("OpenVINO could not build the caption encoder (%s); text queries run on PyTorch", e)
        return None


def graph_key(encoder, size: int) -> str:
    """Content key of a converted graph: the encoder's name, weights and pooling, the input size,
    the code that builds it and the OpenVINO version that converts it."""
    code = [Path(__file__).read_text(), (Path(__file__).parent / "encoder.py").read_text()]
    return sha256_text(encoder.name, str(encoder.grid), str(size), state_digest(encoder.net), *code, openvino_version(), str(RUNTIME_LAYOUT))


def state_digest(module: nn.Module) -> str:
    weights = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return weights.hexdigest()


def openvino_version() -> str:
    import openvino as ov

    return ov.__version__
