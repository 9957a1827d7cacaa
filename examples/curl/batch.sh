#!/bin/sh
# Call a function once per argument (a map), then stream the results as
# NDJSON, one CallResult per line as each call finishes.
#   THAW_GATEWAY_URL=http://127.0.0.1:8000 THAW_TOKEN=... ./batch.sh hello square 1 2 3
set -eu
app=$1 fn=$2
shift 2
auth="Authorization: Bearer $THAW_TOKEN"
items=$(printf '%s\n' "$@" | jq -cs 'map({args: [.], kwargs: {}})')
call_ids=$(curl -sS --fail-with-body -H "$auth" -H "Content-Type: application/json" \
  -d "{\"items\": $items}" \
  "$THAW_GATEWAY_URL/v1/functions/$app/$fn/calls:batch" | jq -c .call_ids)
curl -sS --fail-with-body -N -H "$auth" -H "Content-Type: application/json" \
  -d "{\"call_ids\": $call_ids, \"timeout_s\": 120}" \
  "$THAW_GATEWAY_URL/v1/calls:stream"
