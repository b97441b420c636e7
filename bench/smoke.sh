#!/usr/bin/env bash
# Smoke run of every benchmark scenario against the gateway: seconds each, small N. Proves the
# bench still works (CI runs it); it asserts no figure, only that every scenario runs without an
# error, a failed connect, a lost message or an unanswered ack.
#
#   AEGISX_BIN=target/debug/aegisx-realtime bench/smoke.sh
#
# Env: AEGISX_BIN (default <repo>/target/debug/aegisx-realtime, built when missing),
#      LOADGEN_BIN (default: built here, bench/target/smoke/loadgen; about 25 s from clean).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
AEGISX_BIN="${AEGISX_BIN:-$ROOT/target/debug/aegisx-realtime}"
started=$SECONDS

if [[ -z "${LOADGEN_BIN:-}" ]]; then
  echo "smoke: building the load generator (profile smoke: unoptimized, no debug info)"
  (cd "$BENCH" && cargo build --quiet -p loadgen --profile smoke)
  LOADGEN_BIN="$BENCH/target/smoke/loadgen"
fi
if [[ ! -x "$AEGISX_BIN" ]]; then
  echo "smoke: $AEGISX_BIN missing; building the gateway (debug)"
  (cd "$ROOT" && cargo build --quiet --bin aegisx-realtime)
fi

export JWT_SECRET="smoke-jwt-secret-0123456789abcdef0123"
export API_KEY="smoke-api-key-0123456789"
tmp="$(mktemp -d)"
log="$tmp/gateway.log"
gw_pid=""
cleanup() {
  if [[ -n "$gw_pid" ]] && kill -0 "$gw_pid" 2>/dev/null; then
    kill -TERM "$gw_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gw_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

gw_env=(HOST=127.0.0.1 API_KEYS="$API_KEY" DATABASE_URL="sqlite://$tmp/smoke.db"
  RATE_LIMIT_PER_MINUTE=1000000000 MAX_CONNECTIONS_PER_USER=1000000 LOG_LEVEL=warn
  SHUTDOWN_TIMEOUT_SECS=2)
env "${gw_env[@]}" PORT=0 "$AEGISX_BIN" serve >"$log" 2>&1 &
gw_pid=$!
port=""
for _ in $(seq 300); do
  port="$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)"
  [[ -n "$port" ]] && break
  kill -0 "$gw_pid" 2>/dev/null || { echo "smoke: gateway exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "smoke: gateway did not start:"; cat "$log"; exit 1; }
echo "smoke: gateway pid $gw_pid on 127.0.0.1:$port"

common=(--addr "127.0.0.1:$port" --server-pid "$gw_pid" --strict --label smoke)
failed=0
out=""
run() {
  local name="$1"; shift
  local rc=0
  out="$("$LOADGEN_BIN" "$@" "${common[@]}" 2>"$tmp/$name.err")" || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "smoke: $name ok: ${out:0:400}"
  else
    failed=1
    echo "smoke: $name FAILED (exit $rc): $out"
    sed 's/^/    /' "$tmp/$name.err" | tail -20
  fi
}

run idle     idle -n 50 --hold 1 --settle 0.5
run fanout   fanout -n 20 --rates 20,50 --step-secs 2 --warmup-secs 0.5 --no-stop
run rooms    rooms -n 40 -k 10 --rates 2 --step-secs 2 --warmup-secs 0.5 --no-stop
run chat-ack chat-ack -c 5 -w 8 --duration 2 --warmup 0.5
run notify   notify -u 20 --rate 50 --duration 2
for layout in per-user 100x100 one; do
  run "idle-$layout" idle -n 40 --hold 0.5 --settle 0.2 --tenants "$layout"
done
run rooms-one rooms -n 40 -k 10 --rates 2 --step-secs 1 --warmup-secs 0.3 --no-stop --tenants one
run replay-flood replay-flood --others 10 --rate 10 --flood-sockets 3 --stored 50 --duration 2 --tenants one
run replay-flood-none replay-flood --others 10 --rate 10 --stored 50 --duration 2 --no-flood --tenants one
# Last: the storm restarts the gateway (same port, same database) and reports the new pid.
restart_cmd="env $(printf '%q ' "${gw_env[@]}")PORT=$port $(printf '%q' "$AEGISX_BIN") serve >>$(printf '%q' "$log") 2>&1"
run storm storm -n 40 -k 10 --rate 1 --chat-secs 1.5 --posts-per-room 5 --tenants one \
  --reconnect-delay-ms 200 --reconnect-delay-max-ms 1000 --recover-timeout 20 --quiet-ms 300 \
  --restart-cmd "$restart_cmd"
new_pid="$(sed -n 's/.*"restarted_pid":\([0-9]*\).*/\1/p' <<<"$out")"
[[ -n "$new_pid" ]] && gw_pid="$new_pid"

if ! kill -0 "$gw_pid" 2>/dev/null; then
  echo "smoke: the gateway died during the run"; failed=1
fi
if [[ $failed -ne 0 ]]; then
  echo "smoke: gateway log (tail):"; tail -30 "$log"
  echo "smoke: FAILED after $((SECONDS - started)) s"
  exit 1
fi
echo "smoke: all scenarios ran clean in $((SECONDS - started)) s"
