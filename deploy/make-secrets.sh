#!/bin/sh
# The secrets compose.yaml mounts (deploy/secrets/, never committed): each one
# generated once, kept on later runs. Run before `docker compose up`.
# The directory is 0700, so no other user of this machine reaches them; the
# files themselves are 0644 because compose bind-mounts a file secret with its
# host mode, and the postgres image reads it as its own postgres user.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
umask 077
for name in postgres-password; do
    if [ ! -s "$dir/$name" ]; then
        # 32 random bytes, URL-safe: usable in a connection URL as is.
        head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$dir/$name"
        chmod 0644 "$dir/$name"
        echo "made $dir/$name"
    fi
done
# NATS: the server's configuration (public keys and grants) and one credential
# per role, made by thaw_core itself (the project's venv, else the built image).
# The nats and thaw images run as root, so these stay 0600.
if [ -x "$(dirname "$0")/../.venv/bin/python" ]; then
    "$(dirname "$0")/../.venv/bin/python" -m thaw_core.nats_auth "$dir/nats"
else
    docker run --rm -v "$(cd "$dir" && pwd):/out" thaw:dev python -m thaw_core.nats_auth /out/nats
fi
