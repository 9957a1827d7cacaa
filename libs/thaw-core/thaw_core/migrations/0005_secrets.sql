-- Named secrets (thaw secret create) and the values a deploy stores for its
-- own functions (Secret.from_dict / from_dotenv / from_local_environ), which
-- live under the app's scope: scope '' holds the named ones.
--
-- value is the AES-256-GCM ciphertext of the JSON object {key: value}, under
-- the key key_id names (thaw_gateway.secretbox), with the scope and name as
-- associated data; the key itself is never stored here.
--
-- It replaces 0001's placeholder table, which nothing ever wrote.
DROP TABLE secrets;
CREATE TABLE secrets (
    scope       text NOT NULL DEFAULT '',
    name        text NOT NULL,
    keys        text[] NOT NULL,
    key_id      text NOT NULL,
    nonce       bytea NOT NULL,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

CREATE INDEX secrets_key_id ON secrets (key_id);
