#!/usr/bin/env bash
# Fires order.created through Herald's JSON door with curl and prints the
# delivery ids, one a line. Needs HERALD_URL (http://127.0.0.1:50051) and
# HERALD_TOKEN; HERALD_TENANT is optional (the default tenant is "").
set -euo pipefail

tenant=${HERALD_TENANT:-}
tenant=${tenant//\\/\\\\}
tenant=${tenant//\"/\\\"}
# `json` is the event's data as a JSON document inside a string.
body="{\"tenant\":\"$tenant\",\"event\":\"order.created\",\"json\":\"{\\\"order_id\\\":42}\"}"
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT

# The token goes in through a file descriptor so that it never shows up in
# the process list.
status=$(curl -sS -o "$answer" -w '%{http_code}' -X POST "$HERALD_URL/v1/fire" \
    -H @<(printf 'Authorization: Bearer %s\n' "$HERALD_TOKEN") \
    -H 'Content-Type: application/json' --data-binary "$body") || true
if [[ $status != 2?? ]]; then
    # Status 000: no answer, and curl has said why already. Herald's error
    # body is {"code":…,"status":"…","message":"…"}.
    [[ $status == 000 ]] || echo "herald: HTTP $status: $(cat "$answer")" >&2
    exit 1
fi
# The answer is {"deliveryIds":["…",…]}; the ids are UUIDs.
grep -oE '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}' "$answer"
