"""`onenet train`'s defaults follow the source: shapes keep theirs, photos get the measured ones."""

import pytest

from core.errors import OnenetError
from flows.train import PHOTO_DEFAULTS, TrainOptions, check_options, options_for


def test_shapes_keep_their_defaults_and_photos_get_the_photo_ones():
    assert options_for("shapes") == TrainOptions()
    for source in ("flickr8k", "karpathy"):
        o = options_for(source)
        assert (o.image_size, o.encoder, o.decoder, o.joint) == tuple(PHOTO_DEFAULTS[k] for k in ("image_size", "encoder", "decoder", "joint"))
        assert o.image_size != TrainOptions().image_size
        assert o.decoder.decoding.length_alpha != TrainOptions().decoder.decoding.length_alpha and o.joint.loss != TrainOptions().joint.loss
        assert (o.picture.frame, TrainOptions().picture.frame) == ("full", "subject")  # photos have no plain background to cut from


def test_what_the_user_gives_wins_and_the_rest_stays():
    o = options_for("flickr8k", image_size=160, encoder=None, decoder={"epochs": 3, "dropout": None}, scst={"epochs": 2}, joint={"hidden": 256})
    assert o.image_size == 160 and o.encoder == PHOTO_DEFAULTS["encoder"]
    assert o.decoder.epochs == 3 and o.decoder.dropout == PHOTO_DEFAULTS["decoder"].dropout
    assert o.scst.epochs == 2 and o.joint.hidden == 256 and o.joint.epochs == PHOTO_DEFAULTS["joint"].epochs


def test_a_wrong_caption_encoder_loss_is_one_clear_line():
    import pytest

    from core.errors import OnenetError
    from flows.train import check_options

    with pytest.raises(OnenetError, match="--joint-loss"):
        check_options(options_for("shapes", joint={"loss": "triplet"}))
    with pytest.raises(OnenetError, match="--imagine-frame"):
        check_options(options_for("shapes", picture={"frame": "crop"}))
    with pytest.raises(OnenetError, match="--imagine-align"):
        check_options(options_for("shapes", picture={"align_photos": -1}))


def test_photos_align_the_image_decoder_and_shapes_do_not_unless_asked():
    assert options_for("flickr8k").picture.align_photos == PHOTO_DEFAULTS["picture"].align_photos > 0
    assert options_for("shapes").picture.align_photos == 0
    assert options_for("shapes", picture={"align_photos": 300, "epochs": 5}).picture.align_photos == 300


def test_decoding_options_set_at_training_are_the_models():
    o = options_for("flickr8k", decoding={"beam_size": 5, "rerank": None})
    assert o.decoder.decoding.beam_size == 5
    assert o.decoder.decoding.length_alpha == PHOTO_DEFAULTS["decoder"].decoding.length_alpha  # the photo default kept
    assert o.decoder.decoding.rerank == 100
    with pytest.raises(OnenetError, match="--beam must be at least 1"):
        check_options(options_for("shapes", decoding={"beam_size": 0}))


def test_photos_get_the_attending_photo_captioner_and_it_is_refused_where_it_cannot_work():
    assert options_for("flickr8k").attention.epochs == PHOTO_DEFAULTS["attention"].epochs > 0
    assert options_for("shapes").attention.epochs == 0
    assert options_for("flickr8k", attention={"epochs": 0, "seed": None}).attention.epochs == 0  # turned off
    with pytest.raises(OnenetError, match="--tune-blocks"):
        check_options(options_for("flickr8k", tune_blocks=1))  # the grid is the frozen encoder's
    check_options(options_for("flickr8k", tune_blocks=1, attention={"epochs": 0}))
    with pytest.raises(OnenetError, match="EfficientNet-Lite"):
        check_options(options_for("flickr8k", encoder="torchvision:resnet50"))
    with pytest.raises(OnenetError, match="--attention-epochs"):
        check_options(options_for("shapes", attention={"epochs": -1}))
