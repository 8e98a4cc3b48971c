"""Task cache keys follow the code: a change to any module a task reaches invalidates it, and
only it (tasks/cache.py `source_digest`)."""

from __future__ import annotations

from pathlib import Path

from tasks import cache


def write(root: Path, module: str, text: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        (root / parent / "__init__.py").touch()
    path.write_text(text)


def digest(root: Path, module: str) -> str:
    for f in (cache._imported, cache.code_closure, cache.source_digest):
        f.cache_clear()  # the files change within this test; a process normally reads them once
    return cache.source_digest(module, root)


def test_a_helper_change_reaches_exactly_the_tasks_that_import_it(tmp_path):
    write(tmp_path, "tasks.train", "from core.files import save\nimport core.text as text\n")
    write(tmp_path, "tasks.index", "from core import vectors\n")
    write(tmp_path, "core.files", "def save():\n    from core.photos import decode  # imported inside a function\n")
    write(tmp_path, "core.photos", "def decode(): return 1\n")
    write(tmp_path, "core.text", "import json\n")
    write(tmp_path, "core.vectors", "import numpy\n")
    assert cache.code_closure("tasks.train", tmp_path) == ("core", "core.files", "core.photos", "core.text", "tasks", "tasks.train")
    train, index = digest(tmp_path, "tasks.train"), digest(tmp_path, "tasks.index")

    write(tmp_path, "core.photos", "def decode(): return 2\n")  # two imports away from tasks.train
    assert digest(tmp_path, "tasks.train") != train
    assert digest(tmp_path, "tasks.index") == index  # does not reach core.photos

    write(tmp_path, "core.vectors", "import numpy as np\n")
    assert digest(tmp_path, "tasks.index") != index


def test_real_tasks_reach_their_helpers_and_not_the_rest():
    features = cache.code_closure("tasks.features")
    assert {"core.photos", "models.encoder", "tasks.cache"} <= set(features)
    assert not {"answers.queries", "tasks.ingest", "onenet.cli", "flows.train"} & set(cache.code_closure("tasks.train"))
