"""Decoding photos for the CNN: threads and worker processes give the same pixels and reasons."""

import torch

from core.photos import decoded_batches
from tasks import shapes


def test_decoding_in_processes_gives_what_threads_give(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        shapes.scene(5, i).image.save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_text("not a photo")
    paths.insert(3, tmp_path / "bad.png")
    threads = [x for batch in decoded_batches(paths, 48, 3, workers=2, processes=False) for x in batch]
    procs = [x for batch in decoded_batches(paths, 48, 3, workers=2, processes=True) for x in batch]
    assert len(threads) == len(procs) == 8
    assert isinstance(procs[3], str) and "not an image" in procs[3] and procs[3] == threads[3]
    for a, b in zip(threads, procs):
        if not isinstance(a, str):
            assert a.shape == (3, 48, 48) and torch.equal(a, b)


def test_a_dying_decoding_process_hands_the_rest_to_threads(tmp_path, monkeypatch):
    from core import photos

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        shapes.scene(6, i).image.save(paths[-1])

    def first_batch_then_die(paths, size, batch_size, workers, ahead):
        yield [photos.try_load(p, size) for p in paths[:batch_size]]
        raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly with exit code 1")

    monkeypatch.setattr(photos, "_batches_from_processes", first_batch_then_die)
    batches = list(photos.decoded_batches(paths, 32, 3, workers=2, processes=True))
    assert [len(b) for b in batches] == [3, 3, 1]
    expected = [photos.load_pixels(p, 32) for p in paths]
    assert all(torch.equal(a, b) for a, b in zip([x for b in batches for x in b], expected))
