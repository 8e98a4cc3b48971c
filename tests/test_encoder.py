"""The frozen encoder really carries ImageNet weights, and bad encoder names fail clearly."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import OnenetError
from models.encoder import EncoderTop, SameConv2d, load_encoder, trunk_name

skimage_data = pytest.importorskip("skimage.data")


def classify(encoder, photo: np.ndarray, size: int = 224) -> list[int]:
    image = Image.fromarray(photo).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    with torch.inference_mode():
        logits = encoder.net(encoder.normalise(pixels))
    return logits.topk(3).indices[0].tolist()


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def test_pretrained_weights_recognise_real_photos(encoder):
    # ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso.
    assert classify(encoder, skimage_data.chelsea())[0] in {281, 282, 285}
    assert classify(encoder, skimage_data.coffee())[0] == 967


def test_lite2_weights_recognise_real_photos():
    # The bigger encoder (`--encoder efficientnet-lite2`, the photo default) at its native 260 px.
    lite2 = load_encoder("efficientnet-lite2")
    assert classify(lite2, skimage_data.chelsea(), 260)[0] in {281, 282, 285}
    assert classify(lite2, skimage_data.coffee(), 260)[0] == 967
    assert lite2.feature_dim(224) == 1280 * 5 + 2 * (16 + 24 + 48 + 88)
    # taps are the last block of stages 1-4: the next block starts a wider stage
    blocks = lite2.net._blocks
    assert all(blocks[i + 1]._project_conv.out_channels > blocks[i]._project_conv.out_channels for i in lite2.net.taps)


def test_features_have_global_and_grid_parts(encoder):
    pixels = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    features = encoder.features(pixels)
    assert features.shape == (2, 1280 * 5 + 2 * (16 + 24 + 40 + 80)) == (2, encoder.feature_dim(128))
    # the global part is the mean of the four grid cells (4x4 map pooled to 2x2)
    cells = features[:, 1280 : 1280 * 5].view(2, 1280, 4)
    assert torch.allclose(features[:, :1280], cells.mean(-1), atol=1e-5)


@pytest.mark.parametrize("tuned_blocks", [0, 1, 5])
def test_the_pretrained_top_over_the_trunk_gives_the_whole_encoders_features(encoder, tuned_blocks):
    # The features a tuned model is trained on (the trunk below the cut) and its top at the start.
    name = trunk_name("efficientnet-lite0", tuned_blocks)
    assert name == f"efficientnet-lite0@{16 - tuned_blocks}"
    trunk = load_encoder(name)
    pixels = torch.from_numpy(np.asarray(Image.fromarray(skimage_data.chelsea()).resize((224, 224))).copy()).permute(2, 0, 1)[None]
    stored = trunk.features(pixels)  # through OpenVINO where it is installed, as an ingest runs it
    assert stored.shape == (1, trunk.feature_dim(224))
    top = EncoderTop.pretrained(name, 2)
    with torch.no_grad():
        pooled = top(stored)
    whole = encoder.features(pixels)
    assert pooled.shape == whole.shape == (1, top.out_dim)
    assert (pooled - whole).abs().max() <= 1e-4 * whole.abs().max()


def test_a_cut_that_cannot_be_tuned_is_a_clear_error():
    with pytest.raises(OnenetError, match="between 8 and 16"):
        load_encoder("efficientnet-lite0@3")  # below the colour taps
    with pytest.raises(OnenetError, match="number of frozen blocks"):
        load_encoder("efficientnet-lite0@top")
    with pytest.raises(OnenetError, match="--tune-blocks must be"):
        trunk_name("efficientnet-lite0", 17)
    with pytest.raises(OnenetError, match="EfficientNet-Lite"):
        trunk_name("torchvision:resnet18", 1)
    assert trunk_name("efficientnet-lite2+bf16", 2) == "efficientnet-lite2@19+bf16"
    assert trunk_name("efficientnet-lite0", -1) == "efficientnet-lite0"


def test_same_padding_matches_tensorflow_output_size():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    for size in (7, 8, 224, 225):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(OnenetError, match="unknown encoder"):
        load_encoder("vgg-imaginary")
    with pytest.raises(OnenetError, match="torchvision has no model"):
        load_encoder("torchvision:no_such_net")


def test_torchvision_encoder_is_used_when_its_weights_are_in_torch_home(tmp_path, monkeypatch):
    import torchvision

    # Put a resnet18 checkpoint where torchvision looks for downloaded weights; nothing is fetched.
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    target = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), target)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    encoder = load_encoder("torchvision:resnet18")
    features = encoder.features(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))
    assert features.shape == (1, 512 * 5) == (1, encoder.feature_dim(64))


def test_torchvision_encoder_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(OnenetError, match="not available offline"):
        load_encoder("torchvision:resnet18")


def test_same_padding_at_stride_one_is_symmetric_like_tensorflow():
    torch.manual_seed(0)
    for k in (3, 5):
        conv = SameConv2d(4, 4, k, stride=1, groups=4, bias=False)
        x = torch.randn(2, 4, 9, 9)
        # TensorFlow 'SAME' at stride 1 pads (k - 1) / 2 on every side
        expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [k // 2] * 4), conv.weight, groups=4)
        assert torch.allclose(conv(x), expected, atol=1e-6)


def test_folding_batchnorm_keeps_the_features(encoder):
    unfolded = load_encoder(fold_batchnorm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.net.modules())  # load_encoder folded them
    pixels = torch.from_numpy(np.asarray(Image.fromarray(skimage_data.chelsea()).resize((160, 160))).copy()).permute(2, 0, 1)[None]
    a, b = encoder.features(pixels), unfolded.features(pixels)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
