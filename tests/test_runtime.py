"""The OpenVINO backend computes the same features as PyTorch, keeps its graph, and steps aside cleanly."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import OnenetError
from models import single_thread
from models.encoder import load_encoder
from models.runtime import chosen_backend, openvino_core

ov = pytest.importorskip("openvino")
skimage_data = pytest.importorskip("skimage.data")


def photos(size: int) -> torch.Tensor:
    """Real photos (a cat, a cup of coffee, an astronaut, a rocket), squashed to size x size."""
    arrays = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    pixels = [np.asarray(Image.fromarray(a).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)) for a in arrays]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()  # (4, 3, S, S) uint8


@pytest.fixture
def encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("ONENET_BACKEND", "auto")
    return load_encoder("efficientnet-lite0", cache_dir=tmp_path / "openvino")


# OpenVINO's kernels and PyTorch's (oneDNN) each sum a convolution in their own order, and which
# order depends on the CPU's vector width; over the ~60 layers that leaves a few millionths of the
# features' scale (largest difference / largest feature, measured on these photos: 3.0e-6 at 160 px
# and 1.7e-6 at 224 px on an AVX2-only AMD EPYC; an absolute 1e-4, about 2e-6 of the scale, held
# on AVX-512 machines only). A scrambled or wrongly normalised graph is off by the scale itself.
FEATURE_RTOL = 1e-5


def assert_same_features(got: torch.Tensor, reference: torch.Tensor) -> None:
    scale = reference.abs().max().item()
    difference = (got - reference).abs().max().item()
    assert difference <= FEATURE_RTOL * scale, f"differ by {difference:.3g}, {difference / scale:.2g} of the scale {scale:.3g}"


@pytest.mark.parametrize("size", [160, 224])
def test_openvino_features_match_pytorch_on_real_photos(encoder, size, monkeypatch):
    assert encoder.backend == "openvino"
    pixels = photos(size)
    fast = encoder.features(pixels)
    monkeypatch.setenv("ONENET_BACKEND", "torch")
    assert encoder.backend == "torch"
    reference = encoder.features(pixels)
    assert fast.dtype == reference.dtype == torch.float32 and fast.shape == reference.shape == (4, encoder.feature_dim(size))
    assert_same_features(fast, reference)  # the same features: caches and versions hold
    with single_thread():  # how the training flow's shards run it
        assert_same_features(encoder.features(pixels[:1]), reference[:1])


def test_the_converted_graph_is_kept_and_reused(encoder, tmp_path, monkeypatch):
    encoder.features(photos(160)[:1])
    graphs = sorted((tmp_path / "openvino").glob("*.xml"))
    assert len(graphs) == 1 and graphs[0].with_suffix(".bin").stat().st_size > 10_000_000  # the weights, fp32
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    again = load_encoder("efficientnet-lite0", cache_dir=tmp_path / "openvino")
    assert torch.equal(again.features(photos(160)[:1]), encoder.features(photos(160)[:1]))
    # another size is another graph
    monkeypatch.undo()
    again.features(photos(128)[:1])
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 2


def test_backend_choice_follows_the_setting(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("ONENET_BACKEND", "torch")
    assert chosen_backend(cpu) == "torch"
    monkeypatch.setenv("ONENET_BACKEND", "openvino")
    assert chosen_backend(cpu) == "openvino"
    assert chosen_backend(cuda) == "torch"  # CUDA keeps PyTorch
    monkeypatch.setenv("ONENET_BACKEND", "tensorflow")
    with pytest.raises(OnenetError, match="ONENET_BACKEND"):
        chosen_backend(cpu)
    monkeypatch.setattr("models.runtime.openvino_available", lambda: False)
    monkeypatch.setenv("ONENET_BACKEND", "auto")
    assert chosen_backend(cpu) == "torch"  # not installed: PyTorch, quietly
    monkeypatch.setenv("ONENET_BACKEND", "openvino")
    with pytest.raises(OnenetError, match="not installed"):
        chosen_backend(cpu)


def test_a_graph_openvino_cannot_take_falls_back_to_pytorch(encoder, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(ov, "convert_model", broken)
    pixels = photos(160)[:2]
    features = encoder.features(pixels)
    assert "using PyTorch" in caplog.text
    monkeypatch.setenv("ONENET_BACKEND", "torch")
    assert torch.equal(features, encoder.features(pixels))


def test_bf16_is_a_different_encoder_by_name(tmp_path):
    from tasks.features import feature_dir

    assert feature_dir("efficientnet-lite0+bf16", 224, 2) != feature_dir("efficientnet-lite0", 224, 2)
    with pytest.raises(OnenetError, match="variant"):
        load_encoder("efficientnet-lite0+int8")
    if "BF16" not in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(OnenetError, match="no bf16"):
            load_encoder("efficientnet-lite0+bf16", cache_dir=tmp_path).features(photos(160)[:1])
        return
    half = load_encoder("efficientnet-lite0+bf16", cache_dir=tmp_path)
    full = load_encoder("efficientnet-lite0", cache_dir=tmp_path)
    pixels = photos(160)
    a, b = half.features(pixels), full.features(pixels)
    assert half.name == "efficientnet-lite0+bf16" and half.backend == "openvino"
    assert (a - b).abs().max().item() > 1e-3  # really other numbers ...
    assert torch.nn.functional.cosine_similarity(a, b).min().item() > 0.98  # ... of the same photos


def test_a_runtime_that_computes_other_features_on_this_cpu_is_refused(encoder, monkeypatch, caplog):
    # what ONEDNN_MAX_CPU_ISA=AVX2 does to OpenVINO on an AVX-512 CPU (scrambled features): here
    # simulated by a tolerance nothing can meet; the encoder must notice and use PyTorch
    monkeypatch.setattr("models.runtime.CHECK_TOLERANCE", -1.0)
    pixels = photos(160)[:2]
    features = encoder.features(pixels)
    assert "differ from PyTorch's" in caplog.text and "using PyTorch" in caplog.text
    monkeypatch.setenv("ONENET_BACKEND", "torch")
    assert torch.equal(features, encoder.features(pixels))


SIGNAL_AFTER_ENCODERS_COME_AND_GO = """
import gc, os, signal, sys, threading
from pathlib import Path
import torch
from models.encoder import load_encoder
from models.runtime import openvino_core
signal.signal(signal.SIGUSR1, lambda *a: None)  # Python's handlers run on the alternate signal stack
# Cores asked for, used and dropped in the order of creation: with a Core per call, the second
# one restored the first one's (unmapped) signal stack and the signal below crashed the process.
first = openvino_core(); first.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
second = openvino_core(); second.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
del first, second; gc.collect()
os.kill(os.getpid(), signal.SIGUSR1)
kept = []
def use():
    encoder = load_encoder("efficientnet-lite0", cache_dir=Path(sys.argv[1]))
    encoder.features(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    kept.append(encoder)
use(); use()  # two encoders made on the main thread ...
kept.pop(0); gc.collect()  # ... and dropped out of order
use()
threading.Thread(target=lambda: (kept.clear(), gc.collect())).start()  # or on another thread
gc.collect()
os.kill(os.getpid(), signal.SIGUSR1)
print("survived")
"""


def test_encoders_that_come_and_go_leave_signal_handling_intact(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_ENCODERS_COME_AND_GO, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


# --- text queries (the caption encoder) -----------------------------------------------------------

SEARCHES = ["a red circle", "a small blue square", "a green triangle to the left of a yellow star", "purple", "a big circle on a black background"]


def test_text_queries_through_openvino_find_the_same_photos(trained, monkeypatch):
    from answers.queries import Queries

    monkeypatch.setenv("ONENET_BACKEND", "auto")
    served, plain = Queries.open(trained["workspace"], serving=True), Queries.open(trained["workspace"])
    try:
        assert served._query_runtime is not None and plain._query_runtime is None
        for text in SEARCHES:
            tokens, _ = plain.query_tokens(text)
            fast, reference = served.text_vector(tokens), plain.text_vector(tokens)
            assert fast.shape == reference.shape and np.abs(fast - reference).max() < 1e-5, text
            ours, theirs = (q.search(text, k=10, method="joint").matches for q in (served, plain))
            assert [m.image_id for m in ours] == [m.image_id for m in theirs], text
        graphs = list(trained["workspace"].runtime_cache.glob("caption-encoder-*.xml"))
        assert len(graphs) == 1  # converted once, named by the encoder's weights
    finally:
        served.close()
        plain.close()


def test_text_queries_fall_back_to_pytorch(trained, monkeypatch, caplog):
    from answers.queries import Queries

    q = Queries.open(trained["workspace"], serving=True)
    try:
        monkeypatch.setenv("ONENET_BACKEND", "torch")
        assert q._query_runtime is None  # the setting is honoured
        del q.__dict__["_query_runtime"]
        monkeypatch.setenv("ONENET_BACKEND", "auto")
        monkeypatch.setattr("models.runtime.CHECK_TOLERANCE", -1.0)  # a CPU where OpenVINO computes other numbers
        assert q._query_runtime is None and "text queries run on PyTorch" in caplog.text
        assert q.search("a red circle", k=3, method="joint").matches  # and searches still answer
    finally:
        q.close()
