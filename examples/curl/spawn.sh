#!/bin/sh
# Spawn a call (wait=0: answer 202 at once with its call_id), then fetch its
# result, waiting up to 60 seconds for it to finish.
#   THAW_GATEWAY_URL=http://127.0.0.1:8000 THAW_TOKEN=... ./spawn.sh hello square 7
set -eu
app=$1 fn=$2 arg=$3
auth="Authorization: Bearer $THAW_TOKEN"
call_id=$(curl -sS --fail-with-body -H "$auth" -H "Content-Type: application/json" \
  -d "{\"args\": [$arg], \"kwargs\": {}}" \
  "$THAW_GATEWAY_URL/v1/functions/$app/$fn/calls?wait=0" | jq -r .call_id)
echo "spawned $call_id" >&2
curl -sS --fail-with-body -H "$auth" "$THAW_GATEWAY_URL/v1/calls/$call_id?wait=60"
echo
