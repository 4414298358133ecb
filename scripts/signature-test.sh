#!/usr/bin/env bash
# The README's receiver, verifying signatures with the Standard Webhooks library, against the
# real server: a delivery must arrive, verify, and complete; the same receiver with another
# secret must reject it (so the check can fail).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TASK_SCHEDULER_BIN:-target/debug/task-scheduler}
PY=${PYTHON_VENV:-.venv/bin/python}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

SCHEDULER_DATA_DIR="$work/data" PORT=0 LOG_FORMAT=json RUST_LOG=info "$BIN" serve >"$work/server.log" 2>&1 &
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr=$(grep -o '"addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$work/server.log"; exit 1; }
secret=$(cat "$work/data/signing-secret")

# Runs in a subshell (`< <(deliver_to ...)`), so its receiver is not in the parent's `pids`:
# it stops its own receiver before returning.
deliver_to() { # $1 = secret the receiver trusts; prints the task's final status
  local port receiver; port=$(free_port)
  WEBHOOK_SECRET="$1" "$PY" scripts/receiver.py "$port" >"$work/receiver-$port.log" 2>&1 &
  receiver=$!
  for _ in $(seq 50); do grep -q receiver "$work/receiver-$port.log" 2>/dev/null && break; sleep 0.1; done
  local id
  id=$(curl -sf -X POST "http://$addr/tasks" -H 'Content-Type: application/json' \
    -d '{"action":"webhook","payload":{"url":"http://127.0.0.1:'"$port"'/hook","data":{"message":"Task executed!"}},"delay_seconds":0,"retry":{"max_attempts":1}}' \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
  local status=""
  for _ in $(seq 100); do
    status=$(curl -sf "http://$addr/tasks/$id" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [[ "$status" == completed || "$status" == failed ]] && break
    sleep 0.1
  done
  kill "$receiver" 2>/dev/null || true
  wait "$receiver" 2>/dev/null || true
  echo "$status $port"
}

read -r status port < <(deliver_to "$secret")
grep -q "signature verified" "$work/receiver-$port.log" || { cat "$work/receiver-$port.log"; echo "signature-test: not verified" >&2; exit 1; }
[[ "$status" == completed ]] || { echo "signature-test: task $status" >&2; exit 1; }

other=$("$PY" -c 'import base64,os; print("whsec_"+base64.b64encode(os.urandom(32)).decode())')
read -r status port < <(deliver_to "$other")
grep -q "signature REJECTED" "$work/receiver-$port.log" || { cat "$work/receiver-$port.log"; echo "signature-test: a wrong secret was accepted" >&2; exit 1; }
[[ "$status" == failed ]] || { echo "signature-test: expected failed with a wrong secret, got $status" >&2; exit 1; }
echo "signature-test: verified by the standardwebhooks library; a receiver with another secret rejected it"
