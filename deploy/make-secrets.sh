#!/bin/sh
# The secrets compose.yaml mounts (deploy/secrets/, never committed): each one
# generated once, kept on later runs. Run before `docker compose up`.
# The directory is 0700, so no other user of this machine reaches them; the
# files themselves are 0644 because compose bind-mounts a file secret with its
# host mode, and the postgres image reads it as its own postgres user.
# deploy/k8s/README.md makes the Kubernetes Secrets from these same files.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
umask 077
# 32 random bytes, URL-safe: usable in a connection URL as is.
random_token() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
make_once() {  # make_once NAME COMMAND...: the file made by COMMAND, once
    name="$1"; shift
    if [ ! -s "$dir/$name" ]; then
        "$@" > "$dir/$name"
        chmod 0644 "$dir/$name"
        echo "made $dir/$name"
    fi
}
make_once postgres-password random_token
# MinIO's root user (compose.yaml's minio) and the blob URL that names it.
make_once s3-access-key sh -c 'printf thaw-; head -c 8 /dev/urandom | od -An -tx1 | tr -d " \n"'
make_once s3-secret-key random_token
make_once blob-url sh -c "printf 's3://%s:%s@minio:9000/thaw?secure=false' \
    \"\$(cat '$dir/s3-access-key')\" \"\$(cat '$dir/s3-secret-key')\""
# The gateway's secrets key ring: one base64 AES-256 key a line, first encrypts.
make_once secrets.key sh -c 'head -c 32 /dev/urandom | base64'
# The scheduler's and the gateway's secrets grant key (base64, 32 bytes): the
# scheduler signs each container's leave to fetch its secrets with it.
make_once secrets-grant.key sh -c 'head -c 32 /dev/urandom | base64'
# NATS: the server's configuration (public keys and grants) and one credential
# per role, made by thaw_core itself (the project's venv, else the built image).
# The nats and thaw images run as root, so these stay 0600.
if [ -x "$(dirname "$0")/../.venv/bin/python" ]; then
    "$(dirname "$0")/../.venv/bin/python" -m thaw_core.nats_auth "$dir/nats"
else
    docker run --rm -v "$(cd "$dir" && pwd):/out" thaw:dev python -m thaw_core.nats_auth /out/nats
fi
