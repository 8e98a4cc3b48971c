"""How tests/data/warehouse-1837e80.duckdb.gz was made (then gzip -9):
    python make_warehouse_1837e80.py OUT_DIR CHECKOUT_OF_1837e80

A small warehouse made by onenet's code as of 2026-11-26 (vectors as FLOAT[d] arrays, images without capture metadata): two
versions of different widths (8 and 4), the first promoted, plus one ingested photo."""
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, sys.argv[2])  # a checkout of commit 1837e80
import numpy as np
import pyarrow as pa

from core.files import write_parquet
from core.vectors import to_column
from core.workspace import Workspace
from warehouse import db

ws = Workspace.at(Path(sys.argv[1]))
rng = np.random.default_rng(0)
con = db.connect(ws)
ids = [hashlib.sha256(f"old-{i}".encode()).hexdigest() for i in range(6)]
manifest = pa.table({"image_id": ids, "path": [f"photos/{i}.jpg" for i in range(6)], "width": pa.array([64] * 6, pa.int32()),
                     "height": pa.array([64] * 6, pa.int32()), "source": ["shapes"] * 6, "split": ["train"] * 4 + ["val", "test"],
                     "truth": [None] * 6})
captions = pa.table({"image_id": ids, "n": pa.array([0] * 6, pa.int32()), "raw": [f"a red circle {i}" for i in range(6)], "clean": [f"a red circle {i}" for i in range(6)]})
for version, dim, promote in (("v-eight", 8, True), ("v-four", 4, False)):
    folder = Path(tempfile.mkdtemp())
    words = ["a", "red", "circle", "blue", "square"]
    write_parquet(pa.table({"word": words, "freq": pa.array([5, 4, 3, 2, 1], pa.int32()), "vec": to_column(rng.standard_normal((5, dim)).astype(np.float32))}), folder / "word_vectors.parquet")
    write_parquet(pa.table({"image_id": ids, "vec": to_column(rng.standard_normal((6, dim)).astype(np.float32))}), folder / "image_vectors.parquet")
    write_parquet(pa.table({"image_id": ids, "caption": ["a red circle" for _ in ids], "score": [-1.0] * 6, "method": ["beam3"] * 6}), folder / "generated_captions.parquet")
    row = {"version": version, "flow_run_id": None, "encoder": "efficientnet-lite0@160px", "dim": dim, "config": {}, "metrics": {},
           "checkpoint": f"models/{version}.pt", "index_path": f"indexes/{version}/images.faiss", "joint_checkpoint": None}
    db.land_version(con, manifest, captions, folder, row, [], promote_it=promote)
new_id = hashlib.sha256(b"old-ingested").hexdigest()
db.land_photos(con, "v-eight", pa.table({"image_id": [new_id], "path": ["/photos/new.jpg"], "width": pa.array([64], pa.int32()), "height": pa.array([64], pa.int32())}),
               rng.standard_normal((1, 8)).astype(np.float32), [("a blue square", -0.5)], [], [])
con.execute("CHECKPOINT")
con.close()
