#!/usr/bin/env python3
"""A webhook receiver for trying task-scheduler by hand: prints every request it gets.

    python3 scripts/receiver.py [PORT] [STATUS]    # default 8080, answers 200

Listens on 127.0.0.1 only. STATUS lets you watch retries (e.g. 503) or a permanent
failure (e.g. 400).

With WEBHOOK_SECRET set (the scheduler's whsec_... secret) it verifies each delivery's
Standard Webhooks signature with the `standardwebhooks` library (pip install
standardwebhooks) and answers 401 to anything forged, altered or stale:

    WEBHOOK_SECRET=$(cat .scheduler/signing-secret) python3 scripts/receiver.py 8080
"""
import json
import os
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
SECRET = os.environ.get("WEBHOOK_SECRET", "").strip()
if SECRET:
    from standardwebhooks import Webhook

    VERIFIER = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def handle_one(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        status = STATUS
        if SECRET:
            try:
                VERIFIER.verify(body, {k.lower(): v for k, v in self.headers.items()}, json_parse=False)
                print(f"{now} signature verified", flush=True)
            except Exception as e:  # forged, altered or stale
                print(f"{now} signature REJECTED: {e}", flush=True)
                status = 401
        print(f"{now} {self.command} {self.path} -> {status}", flush=True)
        for name in ("user-agent", "content-type", "webhook-id", "webhook-timestamp", "webhook-signature"):
            if name in self.headers:
                print(f"  {name}: {self.headers[name]}", flush=True)
        if body:
            try:
                print("  body:", json.dumps(json.loads(body)), flush=True)
            except ValueError:
                print("  body:", body[:200], flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = handle_one

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print(f"receiver on http://127.0.0.1:{PORT}/ answering {STATUS}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
