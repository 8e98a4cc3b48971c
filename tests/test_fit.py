"""The training loop every trainer shares (models/fit.py): which epoch it keeps, when it stops,
and that the model ends with the kept epoch's weights."""

import logging

import pytest
import torch

from core.errors import OnenetError
from models.fit import Best, fit, seeded


def run(scores, **options):
    """fit over a one-weight model whose weight is set to the epoch's number, with these scores."""
    model = torch.nn.Linear(1, 1, bias=False)

    def run_epoch(epoch: int) -> dict:
        model.weight.data.fill_(epoch)
        return {"epoch": epoch, "score": scores[epoch - 1]}

    best, history = fit(model, len(scores), run_epoch, lambda record: record["score"], **options)
    return best, [r["epoch"] for r in history], float(model.weight)


def test_the_first_of_the_best_scores_is_kept_and_restored():
    best, ran, weight = run([1.0, 3.0, 2.0, 3.0])
    assert (best.epoch, best.score, best.record, ran, weight) == (2, 3.0, {"epoch": 2, "score": 3.0}, [1, 2, 3, 4], 2.0)


def test_patience_stops_that_many_epochs_after_the_kept_one(caplog):
    with caplog.at_level(logging.INFO, logger="onenet.test"):
        best, ran, weight = run([1.0, 3.0, 2.0, 2.5, 4.0], patience=2, log=logging.getLogger("onenet.test"), name="test")
    assert (best.epoch, ran, weight) == (2, [1, 2, 3, 4], 2.0)
    assert "test: no better epoch for 2 epochs; stopping early" in caplog.text


def test_a_start_is_kept_unless_an_epoch_beats_it():
    start = Best(0, 5.0, {"epoch": 0}, {"weight": torch.zeros(1, 1)})
    best, ran, weight = run([4.0, 5.0], start=start)
    assert (best, ran, weight) == (start, [1, 2], 0.0)
    assert run([4.0, 6.0], start=start)[0].epoch == 2


def test_no_scored_epoch_is_an_error():
    with pytest.raises(OnenetError):
        run([float("nan")])


def test_seeded_seeds_torch_and_numpy_alike():
    first = seeded(3).permutation(10), torch.rand(3)
    again = seeded(3).permutation(10), torch.rand(3)
    assert (first[0] == again[0]).all() and torch.equal(first[1], again[1])


def test_views_each_batch_reads_one_view_of_each_photo_at_random():
    """tasks.train.Captions with a row per view: a batch reads the photo's own row or its other
    view's, both occur, and `photos` (what validation and feature statistics read) is the photo's own."""
    import numpy as np

    from tasks.train import Captions

    own = np.arange(50)
    views = Captions([[1]] * 50, np.stack([own, own + 100], axis=1))
    rows = views.batch_rows(np.arange(50), np.random.default_rng(0))
    assert np.array_equal(views.photos, own) and np.all((rows == own) | (rows == own + 100))
    assert 10 < np.sum(rows >= 100) < 40
    plain = Captions([[1]] * 50, own)
    assert np.array_equal(plain.batch_rows(np.arange(5, 10), np.random.default_rng(0)), own[5:10]) and plain.photos is own
