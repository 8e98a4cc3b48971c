"""The benchmark harness: its exact-search reference agrees with faiss, its verdicts parse goals,
and it rewrites only its own block of BENCHMARKS.md."""

import faiss
import numpy as np

from answers.queries import FAISS_BLAS_THRESHOLD
from bench.__main__ import fmt_ratio, verdict, write
from bench.search import numpy_top, vectors
from tasks.index import recall


def test_batched_faiss_search_equals_brute_force():
    x, queries = vectors(3000, 64)
    faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD  # as answers/queries.py searches
    assert len(queries) >= FAISS_BLAS_THRESHOLD  # the batch takes faiss's BLAS path
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    found = index.search(queries, 10)[1]
    assert recall(found, numpy_top(x, queries)) > 0.999
    assert recall(numpy_top(x, queries)[:, ::-1], numpy_top(x, queries)) == 1.0  # recall ignores order
    assert recall(np.zeros_like(found), numpy_top(x, queries)) < 0.01


def test_goals_are_judged_from_the_ratio():
    assert verdict(12.0, ">= 10x") == ">= 10x met"
    assert verdict(9.9, ">= 10x") == ">= 10x NOT met"
    assert verdict(0.23, ">= 50%") == ">= 50% NOT met"
    assert verdict(None, ">= 10x") == ">= 10x"
    assert verdict(1.4, "<= 2x") == "<= 2x met" and verdict(2.6, "<= 2x") == "<= 2x NOT met"  # a cost that may grow this much
    assert verdict(3.0, "p50 <= 10 ms met") == "p50 <= 10 ms met"  # judged by the section itself
    assert fmt_ratio(0.234, ">= 50%") == "23%" and fmt_ratio(16.46, ">= 10x") == "16.5x"


def test_bench_rewrites_only_its_own_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written notes\n")
    write(path, "quick-cpu", "quick", "first\n")
    write(path, "quick-cuda", "gpu", "gpu numbers\n")
    write(path, "quick-cpu", "quick", "second\n")
    text = path.read_text()
    assert "hand-written notes" in text and "gpu numbers" in text and "second" in text
    assert "first" not in text and text.count("<!-- bench:quick-cpu start -->") == 1
    # a new machine's block goes with the others, before the records of past runs
    path.write_text(text + "\n## History\n\nold runs\n")
    write(path, "full-cuda", "full gpu", "full gpu numbers\n")
    text = path.read_text()
    assert text.index("gpu numbers") < text.index("full gpu numbers") < text.index("## History")
