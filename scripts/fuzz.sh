#!/usr/bin/env bash
# Fuzzes the local server from its own OpenAPI document with schemathesis: every route,
# generated valid and invalid requests, authenticated. Fails on any 5xx, any response that
# does not match the document, or a server crash; and when the run proves too little: fewer
# requests reached the server than FUZZ_MIN_REQUESTS (default 5 per example of the budget), or
# not one `POST /tasks` was answered 201 (a server that refuses every valid create, which the
# excluded `positive_data_acceptance` check would otherwise let pass).
#
# The server and schemathesis run in a network namespace of their own that has nothing but
# loopback: the webhook targets schemathesis invents can never reach another machine.
#
#   scripts/fuzz.sh                       # seed and budget from the Makefile (FUZZ_SEED, FUZZ_EXAMPLES)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${FUZZ_IN_NETNS:-}" != 1 ]]; then
  # Root (CI) can make a network namespace directly; elsewhere map ourselves to root first.
  if [[ $EUID -eq 0 ]]; then
    exec unshare --net env FUZZ_IN_NETNS=1 "$0" "$@"
  else
    exec unshare --map-root-user --net env FUZZ_IN_NETNS=1 "$0" "$@"
  fi
fi
ip link set lo up

BIN=${TASK_SCHEDULER_BIN:-target/debug/task-scheduler}
ST=${SCHEMATHESIS:-.venv/bin/schemathesis}
SEED=${FUZZ_SEED:-20261127}
EXAMPLES=${FUZZ_EXAMPLES:-60}
MIN_REQUESTS=${FUZZ_MIN_REQUESTS:-$((EXAMPLES * 5))}
TOKEN=fuzz-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

work=$(mktemp -d)
server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

SCHEDULER_API_TOKENS="fuzz:$TOKEN" SCHEDULER_DATA_DIR="$work/data" PORT=0 SCHEDULER_RATE_LIMIT=0 \
  LOG_FORMAT=json RUST_LOG=warn,shared::local=info,tower_http=info "$BIN" serve >"$work/server.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -o '"addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)
  [[ -n "$addr" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "fuzz: the server did not start" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$work/server.log"; echo "fuzz: no listening address" >&2; exit 1; }

curl -sf -H "Authorization: Bearer $TOKEN" "http://$addr/openapi.json" >"$work/openapi.json"
echo "fuzz: schemathesis against http://$addr (seed $SEED, up to $EXAMPLES examples per operation)"
status=0
"$ST" run "$work/openapi.json" --url "http://$addr" -H "Authorization: Bearer $TOKEN" \
  --checks all --exclude-checks positive_data_acceptance,use_after_free --phases examples,fuzzing,stateful \
  --seed "$SEED" --max-examples "$EXAMPLES" --workers 2 \
  --generation-deterministic --request-timeout 10 \
  --report junit --report-junit-path "$work/junit.xml" || status=$?

if grep -q '"level":"ERROR"' "$work/server.log"; then
  echo "fuzz: the server logged errors:" >&2
  grep '"level":"ERROR"' "$work/server.log" | head -20 >&2
  status=1
fi
kill -0 "$server" 2>/dev/null || { echo "fuzz: the server died" >&2; status=1; }

# What the server answered, from its own log (tower_http's one line per response).
python3 - "$work/server.log" "$MIN_REQUESTS" <<'PY' || status=1
import collections, json, re, sys

log, min_requests = sys.argv[1], int(sys.argv[2])
answers = collections.Counter()
for line in open(log, encoding="utf-8", errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("fields", {}).get("message") != "finished processing request":
        continue
    span = event.get("span", {})
    path = re.sub(r"^/tasks/[^/?]+", "/tasks/{id}", span.get("uri", "?").split("?")[0])
    answers[(span.get("method", "?"), path, event["fields"].get("status"))] += 1

total = sum(answers.values())
print(f"fuzz: {total} requests answered by the server")
for method, path in sorted({(m, p) for m, p, _ in answers}):
    by_status = sorted((s, n) for (m, p, s), n in answers.items() if (m, p) == (method, path))
    print(f"  {method:6} {path:24} " + ", ".join(f"{s}: {n}" for s, n in by_status))
ok = True
if total < min_requests:
    print(f"fuzz: only {total} requests reached the server, fewer than {min_requests}", file=sys.stderr)
    ok = False
created = answers[("POST", "/tasks", 201)]
if created < 1:
    print("fuzz: no POST /tasks was answered 201: the server refused every valid create", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
exit "$status"
