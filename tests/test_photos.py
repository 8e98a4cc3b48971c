"""Decoding photos for the CNN: threads and worker processes give the same pixels and reasons."""

import torch

from onenet.photos import decoded_batches
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
