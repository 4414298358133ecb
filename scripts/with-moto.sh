#!/usr/bin/env bash
# Runs a command with a private moto server (the AWS emulator) on a free loopback port, and
# stops the server afterwards, whatever happens (the trap fires on success, failure and
# Ctrl-C). Exports what the AWS SDK and the tests need: AWS_ENDPOINT_URL, dummy credentials,
# and AWS_REGION.
#
#   scripts/with-moto.sh PYTHON command args...
#
# PYTHON is the dev venv's interpreter, with moto installed; the server is
# scripts/moto_server.py: moto's own, with DynamoDB transactions rolled back item by item (see
# that file for why).
set -euo pipefail
python_bin=$1; shift
server=$(cd "$(dirname "$0")" && pwd)/moto_server.py

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
python_bin=$(cd "$(dirname "$python_bin")" && pwd)/$(basename "$python_bin")
work=$(mktemp -d -t moto.XXXXXX)
log=$work/moto.log
# Its own directory: the request recorder (used by the rehearsal to count AWS calls) writes
# there, not into the checkout.
(cd "$work" && MOTO_RECORDER_FILEPATH="$work/recording" exec "$python_bin" "$server" -H 127.0.0.1 -p "$port") >"$log" 2>&1 &
moto_pid=$!
stop() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

up() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=2)" 2>/dev/null; }
for _ in $(seq 1 150); do
  if up; then break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then echo "moto server died:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.2
done
up || { echo "moto server did not start" >&2; cat "$log" >&2; exit 1; }
echo "moto server on http://127.0.0.1:$port (pid $moto_pid)"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
"$@"
