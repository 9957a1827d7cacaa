#!/bin/sh
# Call a deployed function and wait for its result (200: finished within
# wait seconds; 202: still running, the body has its call_id).
#   THAW_GATEWAY_URL=http://127.0.0.1:8000 THAW_TOKEN=... ./call.sh hello square 7
set -eu
app=$1 fn=$2 arg=$3
curl -sS --fail-with-body \
  -H "Authorization: Bearer $THAW_TOKEN" -H "Content-Type: application/json" \
  -d "{\"args\": [$arg], \"kwargs\": {}}" \
  "$THAW_GATEWAY_URL/v1/functions/$app/$fn/calls?wait=60"
echo
