#!/usr/bin/env bash
# Schema fuzzing of the HTTP API: schemathesis, every check, against the OpenAPI document of a
# fresh gateway (`/api/v1/openapi.json`). It fails on any disagreement between the document
# and what the server does (a schema-valid request refused, a schema-violating one accepted, a
# response outside the document) and on any 5xx. Bounded: few examples per operation, one
# worker, a fixed seed (the same cases every run) and a hard timeout.
#   AEGISX_BIN   the gateway binary (default: target/debug/aegisx-realtime)
#   SCHEMA_VENV  the venv holding requirements.txt (default: tests/schema/.venv)
#   SCHEMA_SEED, SCHEMA_EXAMPLES  to explore beyond the fixed run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${AEGISX_BIN:-$here/../../target/debug/aegisx-realtime}
st=${SCHEMA_VENV:-$here/.venv}/bin/st
key=schema-fuzz-api-key-0123456789
dir=$(mktemp -d)

# A high API-key failure limit: the auth checks send wrong keys on purpose.
env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 JWT_SECRET=schema-fuzz-secret-0123456789abcdef \
  API_KEYS="$key" API_KEY_FAILURES_PER_IP_PER_MINUTE=1000000 \
  DATABASE_URL="sqlite://$dir/t.db" LOG_LEVEL=warn \
  "$bin" serve >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT

addr=
for _ in $(seq 1 300); do
  addr=$(grep -Eo 'listening on 127\.0\.0\.1:[0-9]+' "$dir/log" | awk '{print $3}' || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "the gateway did not start:" >&2
  cat "$dir/log" >&2
  exit 1
fi

# From the scratch folder: schemathesis keeps a cache in its working directory.
cd "$dir"
timeout --kill-after=10 300 "$st" run "http://$addr/api/v1/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks all --max-examples "${SCHEMA_EXAMPLES:-30}" --seed "${SCHEMA_SEED:-1}" \
  --workers 1 --request-timeout 10 --no-color --generation-database none
