-- Image builds (the builder service): content-addressed layers and the
-- manifests of built images. See thaw_core/layers.py for how ids are made.

-- One row per stored layer: a build step that changed files. The tar is in
-- the blob store at layers/<digest>. A step that changed no file has a row
-- with digest '' (nothing stored), so that rebuilding it is a cache hit too.
-- Steps that only set metadata (env, workdir) have no row.
CREATE TABLE layers (
    layer_id    text PRIMARY KEY,          -- sha256(parent id + step)
    digest      text NOT NULL,             -- sha256 of the zstd tar; '' for an empty layer
    size        bigint NOT NULL,           -- compressed bytes
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX layers_by_digest ON layers (digest) WHERE digest <> '';

-- One row per built image, keyed by the id of its last step.
CREATE TABLE images (
    image_id    text PRIMARY KEY,
    manifest    jsonb NOT NULL,            -- thaw_core.layers.ImageManifest
    created_at  timestamptz NOT NULL DEFAULT now()
);
