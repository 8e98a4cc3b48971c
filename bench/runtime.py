"""The CPU runtime beyond the CNN: is OpenVINO worth it for beam search and the caption encoder?

Issue 17 adopts OpenVINO elsewhere only where it wins by >= 1.3x with the same outputs. Measured
here side by side in one run, on a Flickr8k-sized vocabulary (3,000 words) with random weights
(the arithmetic, not the words, sets the speed):
- batched beam search (beam 3, 256 photos): every decoder step through OpenVINO vs PyTorch;
- the caption encoder on one query (what a search waits for): latency p50. Adopted: the explorer
  and `Queries.open(..., serving=True)` run text queries through OpenVINO (models/runtime.py).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from bench.common import Row, latencies
from bench.decoder import FEATURE_DIM
from models.beam import beam_search
from models.captioner import Captioner, CaptionerConfig
from models.joint import CaptionEncoder
from models.runtime import OpenVinoQueries, openvino_core

VOCAB = 3000


class _Step(nn.Module):
    def __init__(self, model: Captioner):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, image: torch.Tensor):
        logp, (h, _) = self.model.step(tokens, (h, image))
        return logp, h


class OpenVinoSteps:
    """A Captioner for beam_search whose decoding steps run in OpenVINO (start stays in PyTorch)."""

    def __init__(self, model: Captioner, threads: int):
        import openvino as ov

        B, cfg = 4, model.cfg
        example = (torch.zeros(B, dtype=torch.long), torch.zeros(cfg.layers, B, cfg.hidden), torch.zeros(1, B, cfg.dim))
        with torch.no_grad():
            graph = ov.convert_model(_Step(model).eval(), example_input=example)
        graph.reshape({0: [-1], 1: [cfg.layers, -1, cfg.hidden], 2: [1, -1, cfg.dim]})
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = openvino_core().compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.model = model

    def start(self, image_vecs: torch.Tensor):
        return self.model.start(image_vecs)

    def step(self, tokens: torch.Tensor, state):
        h, image = state
        self.request.infer({0: tokens.numpy(), 1: h.contiguous().numpy(), 2: image.contiguous().numpy()})
        logp, h = (torch.from_numpy(self.request.get_output_tensor(i).data.copy()) for i in (0, 1))
        return logp, (h, image)


def run(bounds: dict, device: torch.device, full: bool) -> list[Row]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    model = Captioner(CaptionerConfig(feature_dim=FEATURE_DIM, vocab_size=VOCAB)).eval()
    photos = 256
    vecs = model.image_vectors(torch.randn(photos, FEATURE_DIM))
    rows: list[Row] = []
    with torch.no_grad():
        steps = OpenVinoSteps(model, threads)
        timings: dict[str, float] = {}
        outputs = {}
        for name, decoder in (("torch", model), ("openvino", steps)):
            beam_search(decoder, vecs[:8], beam_size=3)  # warm-up
            started = time.perf_counter()
            outputs[name] = [c.tokens for c in beam_search(decoder, vecs, beam_size=3)]
            timings[name] = time.perf_counter() - started
        same = np.mean([a == b for a, b in zip(outputs["torch"], outputs["openvino"])])
        speedup = timings["torch"] / timings["openvino"]
        rows.append(Row("runtime", f"beam search (beam 3, {photos} photos, {VOCAB:,} words): OpenVINO steps vs PyTorch, {same:.0%} identical captions",
                        f"{photos / timings['openvino']:.1f} photos/s", f"{photos / timings['torch']:.1f} photos/s PyTorch", speedup,
                        ">= 1.3x to adopt"))

        encoder = CaptionEncoder(model.word_vectors.detach()).eval()
        started = time.perf_counter()
        compiled = OpenVinoQueries(encoder, cache_dir=None)  # what `Queries(serving=True)` builds
        build = time.perf_counter() - started
        queries = [torch.randint(3, VOCAB, (1, int(n))) for n in torch.randint(4, 14, (64,))]
        differences = [np.abs(compiled(q) - encoder(q)[0].numpy()).max() for q in queries]
        ours = statistics.median(latencies(lambda i: compiled(queries[i % 64]), 200))
        theirs = statistics.median(latencies(lambda i: encoder(queries[i % 64]), 200))
        rows.append(Row("runtime", f"caption encoder, one query (search latency p50), max |difference| {max(differences):.1e}; "
                        f"converting + compiling once: {build * 1000:.0f} ms",
                        f"{ours * 1000:.2f} ms OpenVINO", f"{theirs * 1000:.2f} ms PyTorch", theirs / ours, ">= 1.3x to adopt"))
    return rows
