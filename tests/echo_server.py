"""A server that answers every request with the request's own header lines
and path as JSON ({"path": path, "headers": [[name, value], ...]}), gzip-compressed when the path is
/gzip and the client accepts gzip; on /body, with the request's body as sent
(a reply of any shape a test writes). Used by tests/spec/http_spec.lua to
check what orch's HTTP client sends and how it reads replies. Usage:
echo_server.py PORT_FILE"""
import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(n) if n else b""
        body = json.dumps({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        if self.path == "/body":
            body = sent
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/gzip" and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
with open(sys.argv[1], "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()
