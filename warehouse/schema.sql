-- onenet's warehouse: every table in one place, at the schema version warehouse/db.py's
-- SCHEMA_VERSION names (a warehouse made by older code gets its MIGRATIONS when a writer opens it).
-- Vectors are stored as fixed-size FLOAT[d] arrays, the type array_cosine_similarity and
-- array_inner_product work on, in one table per width: word_vectors_d300, image_vectors_d300
-- (made by warehouse/db.py when a version of that width lands). The views word_vectors and
-- image_vectors show every width as FLOAT[] lists; current_word_vectors and
-- current_image_vectors (made on promotion) show the promoted version's arrays, uncast.

CREATE TABLE IF NOT EXISTS images (
    image_id    VARCHAR PRIMARY KEY,  -- sha256 of the file's bytes
    path        VARCHAR NOT NULL,     -- workspace-relative or absolute
    width       INTEGER,
    height      INTEGER,
    source      VARCHAR,              -- shapes | flickr8k | karpathy | folder
    split       VARCHAR,              -- train | val | test | NULL (ingested, no captions)
    truth       JSON,                 -- ground truth where the source has it (shapes)
    ingested_at TIMESTAMP DEFAULT current_timestamp,
    -- When, where and with which camera (core/photo_files.py: EXIF, read at ingest or landing)
    taken_at        TIMESTAMP,        -- local time where taken (EXIF DateTimeOriginal), else the file's modification time
    taken_at_offset VARCHAR,          -- '+02:00': taken_at minus it is UTC (NULL: EXIF gave no offset)
    taken_at_source VARCHAR,          -- exif | file (modification time) | none (file unreadable when read)
    camera_make     VARCHAR,
    camera_model    VARCHAR,
    gps_lat         DOUBLE,           -- decimal degrees, north positive
    gps_lon         DOUBLE,           -- decimal degrees, east positive
    orientation     SMALLINT,         -- EXIF orientation 1..8 (onenet reads pixels upright)
    pixels_read     VARCHAR           -- what the CNN read at ingest: full | preview WxH (HEIC, RAW) | half-size (RAW)
);

CREATE TABLE IF NOT EXISTS captions (
    image_id VARCHAR NOT NULL,
    n        INTEGER NOT NULL,        -- position among the photo's human captions
    raw      VARCHAR NOT NULL,
    clean    VARCHAR NOT NULL,
    PRIMARY KEY (image_id, n)
);

CREATE TABLE IF NOT EXISTS model_versions (
    version     VARCHAR PRIMARY KEY,  -- digest of what shaped the model
    created_at  TIMESTAMP DEFAULT current_timestamp,
    flow_run_id VARCHAR,
    encoder     VARCHAR,
    dim         INTEGER,              -- width of word and image vectors
    config      JSON,
    metrics     JSON,
    checkpoint  VARCHAR,              -- workspace-relative .pt
    index_path  VARCHAR,              -- workspace-relative faiss index
    promoted    BOOLEAN DEFAULT false,
    joint_checkpoint VARCHAR,         -- workspace-relative caption encoder (models/joint.py), NULL before it existed
    index_kind  VARCHAR,              -- which faiss index serves the version (exact 'flat', or 'ivf-flat lists=L nprobe=P' for large collections)
    picture_checkpoint VARCHAR        -- workspace-relative image decoder (models/picture.py), NULL when trained without one
);

CREATE TABLE IF NOT EXISTS generated_captions (
    version  VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    caption  VARCHAR NOT NULL,
    score    DOUBLE,                  -- length-normalised log-probability
    method   VARCHAR                  -- e.g. beam3
);

CREATE TABLE IF NOT EXISTS rejects (
    path    VARCHAR NOT NULL,
    reason  VARCHAR NOT NULL,
    seen_at TIMESTAMP DEFAULT current_timestamp,
    -- the file as it was judged: unchanged (same size and modification time), it is not read again
    size     BIGINT,
    mtime_ns BIGINT
);

-- Every file found holding an ingested photo: copies of one photo are one image (images.path is
-- the copy a person would pick, core/paths.py), and `ingest --prune` forgets a photo only when
-- no copy is left. Paths are absolute, as core/paths.py stores them.
CREATE TABLE IF NOT EXISTS photo_paths (
    path     VARCHAR PRIMARY KEY,
    image_id VARCHAR NOT NULL,
    size     BIGINT,                  -- as last read: a file unchanged since is not hashed again
    mtime_ns BIGINT,
    seen_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS evaluations (
    version      VARCHAR NOT NULL,    -- the model version measured
    split        VARCHAR NOT NULL,    -- val | test | train
    task         VARCHAR NOT NULL,    -- captions | retrieval | words
    method       VARCHAR NOT NULL,    -- greedy | beam3 | nn-baseline | inversion | inversion+rerank | likelihood | word-vectors
    metric       VARCHAR NOT NULL,    -- BLEU-1..4 | METEOR | ROUGE-L | CIDEr | text->image R@k | image->text R@k | similar top-5 | analogy top-5
    value        DOUBLE,              -- x100 (percent); NULL when it could not be measured (METEOR without Java)
    n            INTEGER,             -- photos, queries or checks it was measured on
    pool         INTEGER,             -- retrieval: photos searched among
    evaluated_at TIMESTAMP DEFAULT current_timestamp,
    flow_run_id  VARCHAR
);

CREATE TABLE IF NOT EXISTS evaluation_captions (
    version  VARCHAR NOT NULL,
    split    VARCHAR NOT NULL,
    method   VARCHAR NOT NULL,        -- greedy | beam3 | nn-baseline
    image_id VARCHAR NOT NULL,
    caption  VARCHAR NOT NULL
);

-- Every change of the promoted version, and every candidate the gate turned down.
CREATE TABLE IF NOT EXISTS promotions (
    decided_at  TIMESTAMP DEFAULT current_timestamp,
    candidate   VARCHAR NOT NULL,     -- the version the decision is about
    incumbent   VARCHAR,              -- the version promoted when it was taken (NULL: none yet)
    decision    VARCHAR NOT NULL,     -- promoted | rejected | rollback | first
    reason      VARCHAR NOT NULL,     -- one line a person can read
    tolerance   DOUBLE,               -- gate: relative drop allowed per gated metric
    comparison  JSON,                 -- gate: [{metric, incumbent, candidate, floor, passed}]
    flow_run_id VARCHAR
);

-- facts about the warehouse itself, e.g. its schema version and which version of the SQL macros it holds
CREATE TABLE IF NOT EXISTS warehouse_info (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);

-- the photos whose rows changed since the readers' snapshot before last (warehouse/snapshot.py):
-- a publish syncs those rows into the spare snapshot instead of copying the whole file.
-- image_id NULL: anything may have changed (the next publish copies the file).
CREATE TABLE IF NOT EXISTS snapshot_journal (
    generation BIGINT NOT NULL,           -- the publish that shows the change (warehouse_info 'published' + 1)
    image_id   VARCHAR
);

-- point lookups by photo (a search's 10 results, one photo's vector) without scanning every
-- version's rows: at 1,000,000 photos a caption lookup scanned for 20-25 ms
CREATE INDEX IF NOT EXISTS generated_captions_by_image ON generated_captions (image_id);
