-- Scoped tokens: what each token may do (api.Scope), for which apps (an
-- invoke token's, NULL: all), until when. Tokens made before scopes existed
-- could do everything: they become admin tokens. New rows name their scope.
ALTER TABLE tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'admin'
        CHECK (scope IN ('admin', 'deploy', 'invoke', 'read')),
    ADD COLUMN apps text[],
    ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ALTER COLUMN scope DROP DEFAULT;
