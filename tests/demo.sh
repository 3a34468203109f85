#!/bin/sh
# make demo: a local HTTP server, curl confined by example.conf, and what
# both sides saw.  Argument: the build directory.
set -eu
BUILD=${1:-build}
WORK=$(mktemp -d /tmp/portfence-demo-XXXXXX)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

# A server that prints the source address of every client it serves.
cat > "$WORK/server.py" <<'PY'
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host, port = self.client_address[:2]
        print(f"server saw a connection from {host}:{port}", flush=True)
        body = b"hello from the demo server\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$WORK/server.py" > "$WORK/server.out" 2>&1 &
SERVER=$!
while [ ! -s "$WORK/server.out" ]; do sleep 0.05; done
PORT=$(head -n 1 "$WORK/server.out")

echo "== portfence check -c example.conf"
"$BUILD/portfence" check -c example.conf
echo
echo "== portfence explain -c example.conf -- curl --to 127.0.0.1:$PORT"
"$BUILD/portfence" explain -c example.conf -- curl --to "127.0.0.1:$PORT"
echo
echo "== three curl runs confined to app legacy-web (ports 61000-61099, double-hash)"
export PORTFENCE_LOG="$WORK/audit.jsonl"
for i in 1 2 3; do
  "$BUILD/portfence" run -c example.conf -- curl -s "http://127.0.0.1:$PORT/"
done
sleep 0.2
echo
echo "== what the server saw"
tail -n +2 "$WORK/server.out"
echo
echo "== the audit records (PORTFENCE_LOG=$PORTFENCE_LOG)"
cat "$WORK/audit.jsonl"
echo
echo "== portfence report"
"$BUILD/portfence" report -c example.conf "$WORK/audit.jsonl"
