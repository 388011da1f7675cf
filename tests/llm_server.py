#!/usr/bin/env python3
"""Mock LLM HTTP server for orch tests and benchmarks (Python 3 stdlib only).

Usage:
  python3 tests/llm_server.py --port 0 --port-file /tmp/p [--host 127.0.0.1]
      [--latency-ms 0] [--fail-429 R] [--fail-500 R] [--garbage R] [--hang R]
      [--truncate R] [--slow R] [--seed N] [--retry-after S] [--retry-after-date]
      [--slow-ms 2000] [--hang-s 300] [--verbose]

Endpoints:
  POST /v1/chat/completions  OpenAI-compatible (Authorization: Bearer <key>)
  POST /v1/messages          Anthropic-compatible (x-api-key, anthropic-version)
  POST /v1/files             OpenAI Files (multipart, purpose=batch); GET /v1/files/ID/content
  POST /v1/batches           OpenAI Batches; GET /v1/batches[/ID] (list: ?limit= &after=)
  POST /v1/messages/batches  Anthropic Message Batches; GET .../batches[/ID[/results]]
  GET  /health               200 "ok"
  GET  /admin/stats          counters (JSON); inflight / max_inflight: LLM
                             requests answered at once (now / most since reset);
                             proxied: requests whose target was a whole URL
                             (http://host/path, as a client sends to a proxy),
                             served as their path;
                             per_second: LLM requests by the whole second
                             (epoch, server clock) they arrived in
  POST /admin/reset          zero counters and per-body attempt memory
  GET  /admin/config         current fault/latency config
  POST /admin/config         JSON with any of: fail_429 fail_500 garbage hang
                             truncate slow latency_ms seed retry_after
                             retry_after_date slow_ms hang_s -> 200 + new config
                             (also omit_usage: true/false, see below)

Replies are deterministic. The reply text is "echo: " + the first 60 chars of
the last user message; when response_format.type == "json_object" or that
message contains the word JSON, the text is the JSON string
{"answer": "<echo text>", "length": <len of that message>}.
Tokens: prompt = ceil(chars of all message contents (+ Anthropic system) / 4) + 5,
completion = ceil(len(text) / 4).

Faults.  Every request to an LLM endpoint counts as one attempt of its exact
body (raw bytes).  A directive [[fault:KIND]] or [[fault:KINDxN]] in the last
user message (KIND: 429 500 garbage hang truncate slow 404 400) overrides the
global rates: without xN it applies to every attempt, with xN to the first N
attempts of that body, later attempts succeed.  Otherwise the global rates are
applied: r = hash(seed, attempt, body) mapped to [0,1) and compared against
the cumulative rates in the order fail_429, fail_500, garbage, hang, truncate,
slow.  The same sequence of requests therefore gives the same faults, and a
retried identical request gets a fresh draw.  Response headers X-Mock-Attempt
and X-Mock-Fault expose the attempt number and the fault applied.

Output spread.  --pad-words N (or {"pad_words": N} to /admin/config) adds
0..N words to each reply (after the echo; inside "answer" for JSON), as many
as sha256(last user message) picks, so replies vary in length as a model's
do and the same request always gets the same reply.

Batches.  A batch completes batch_delay_s seconds (--batch-delay-s, or
{"batch_delay_s": S} to /admin/config) after its creation; the answer to a
create call is held batch_create_delay_s seconds (default 0) after the
batch exists, so a test can kill the client before it learns the id; a
create call received is held batch_create_record_delay_s seconds (default 0)
before the batch exists (a slow provider still working on a create call its
client has given up on, or died after sending); the
next batch_create_fail create calls answer 500 and create nothing.  A request whose
last user message holds [[batch:expire]] or [[batch:error]] ([[batch:expirex1]]:
only in the first batch it is submitted in) ends expired or errored; an
OpenAI batch with an expired request ends "expired".  /admin/stats "batch"
counts files, creates_received, batches, requests_submitted, submitted_twice (a custom_id
submitted while an earlier submission was live or had succeeded), billed,
billed_twice, expired, errored, polls, lists and downloads.

No usage.  --omit-usage (or {"omit_usage": true} to /admin/config) leaves
the "usage" object out of every successful reply, as several
OpenAI-compatible servers and proxies do.  /admin/stats "authorization"
counts LLM requests by the Authorization (or x-api-key) value they carried.
"""

import argparse
import email.utils
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE_KEYS = ("fail_429", "fail_500", "garbage", "hang", "truncate", "slow")
FAULT_ORDER = (("fail_429", "429"), ("fail_500", "500"), ("garbage", "garbage"),
               ("hang", "hang"), ("truncate", "truncate"), ("slow", "slow"))
DIRECTIVE_RE = re.compile(r"\[\[fault:(429|500|garbage|hang|truncate|slow|404|400)(?:x(\d+))?\]\]")
JSON_WORD_RE = re.compile(r"\bJSON\b")
MAX_BODY = 64 * 1024 * 1024
UNKNOWN_MODEL = "no-such-model"
BAD_KEY = "bad-key"
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
LLM_PATHS = (OPENAI_PATH, ANTHROPIC_PATH)


class State:
    """Config and counters shared by all handler threads."""

    def __init__(self, config, verbose):
        self.lock = threading.RLock()  # the batch endpoints reply while holding it
        self.config = config
        self.verbose = verbose
        self.shutdown = threading.Event()
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = 0
            self.by_status = {}
            self.by_path = {}
            self.faults = {}
            self.attempts = {}  # sha256(body) -> count
            self.max_attempts = 0
            self.duplicates = 0
            self.unknown_path = 0
            self.proxied = 0  # requests sent as to a proxy (absolute-form target)
            self.hanging = 0
            self.seq = 0
            self.inflight = 0  # LLM requests being answered now
            self.max_inflight = 0  # the most answered at once since the reset
            self.authorization = {}  # Authorization / x-api-key value -> requests
            self.per_second = {}  # whole second of the server's clock (epoch) -> LLM requests that arrived in it
            self.batch = Batches()

    def note_auth(self, value):
        with self.lock:
            self.authorization[value] = self.authorization.get(value, 0) + 1

    def begin(self, path, body):
        """Registers one LLM request; returns (attempt number, id number)."""
        key = hashlib.sha256(body).digest()
        with self.lock:
            self.requests += 1
            sec = int(time.time())
            self.per_second[sec] = self.per_second.get(sec, 0) + 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            n = self.attempts.get(key, 0) + 1
            self.attempts[key] = n
            if n > 1:
                self.duplicates += 1
            self.max_attempts = max(self.max_attempts, n)
            self.seq += 1
            return n, self.seq

    def count_status(self, status):
        with self.lock:
            k = str(status)
            self.by_status[k] = self.by_status.get(k, 0) + 1

    def count_fault(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def stats(self):
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_path": dict(self.by_path),
                "unique_bodies": len(self.attempts),
                "max_attempts_per_body": self.max_attempts,
                "duplicates": self.duplicates,
                "faults": dict(self.faults),
                "hanging": self.hanging,
                "unknown_path_requests": self.unknown_path,
                "proxied": self.proxied,
                "inflight": self.inflight,
                "max_inflight": self.max_inflight,
                "authorization": dict(self.authorization),
                "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
                "batch": self.batch.stats(),
            }

    def get_config(self):
        with self.lock:
            return dict(self.config)

    def update_config(self, changes):
        """Validates and applies changes; returns (new config, error or None)."""
        if not isinstance(changes, dict):
            return None, "config body must be a JSON object"
        new = {}
        for k, v in changes.items():
            if k in RATE_KEYS:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    return None, "%s must be a number from 0 to 1" % k
                new[k] = float(v)
            elif k == "pad_words":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    return None, "pad_words must be a whole number from 0"
                new[k] = v
            elif k in ("latency_ms", "slow_ms", "retry_after", "hang_s", "batch_delay_s", "batch_create_delay_s",
                       "batch_create_record_delay_s", "batch_create_fail"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    return None, "%s must be a non-negative number" % k
                new[k] = v
            elif k == "seed":
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    return None, "seed must be an integer or string"
                new[k] = v
            elif k == "retry_after_date":
                if not isinstance(v, bool):
                    return None, "retry_after_date must be true or false"
                new[k] = v
            elif k == "omit_usage":
                if not isinstance(v, bool):
                    return None, "omit_usage must be true or false"
                new[k] = v
            else:
                return None, "unknown config key: %s" % k
        with self.lock:
            self.config.update(new)
            return dict(self.config), None


def content_text(content):
    """Text of a message content: a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "".join(parts)
    return ""


def rand01(seed, attempt, body):
    h = hashlib.sha256(("%s:%d:" % (seed, attempt)).encode() + body).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def choose_fault(cfg, attempt, body, last_user):
    """Returns the fault kind for this request, or None."""
    m = DIRECTIVE_RE.search(last_user)
    if m:
        kind, times = m.group(1), m.group(2)
        if times is None or attempt <= int(times):
            return kind
        return None
    r = rand01(cfg["seed"], attempt, body)
    acc = 0.0
    for key, kind in FAULT_ORDER:
        acc += cfg[key]
        if r < acc:
            return kind
    return None


def reply_object(anthropic, model, texts, last_user, req, seq, pad_words=0):
    """The successful reply to a chat request (OpenAI or Anthropic shape)."""
    echo = "echo: " + last_user[:60]
    if pad_words:
        h = int.from_bytes(hashlib.sha256(last_user.encode()).digest()[:8], "big")
        echo += " word" * (h % (pad_words + 1))
    want_json = JSON_WORD_RE.search(last_user) is not None
    rf = req.get("response_format")
    if not anthropic and isinstance(rf, dict) and rf.get("type") == "json_object":
        want_json = True
    text = json.dumps({"answer": echo, "length": len(last_user)}) if want_json else echo
    chars = sum(len(t) for t in texts)
    if anthropic:
        chars += len(content_text(req.get("system")))
    p = math.ceil(chars / 4) + 5
    c = math.ceil(len(text) / 4)
    if anthropic:
        return {"id": "msg_%d" % seq, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": c}}
    return {"id": "chatcmpl-%d" % seq, "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}


def last_user_text(messages):
    """(texts of all messages, text of the last user message)."""
    texts = [content_text(x.get("content")) for x in messages]
    for x, t in zip(reversed(messages), reversed(texts)):
        if x.get("role") == "user":
            return texts, t
    return texts, texts[-1] if texts else ""


def fmt_seconds(v):
    return str(int(v)) if float(v).is_integer() else repr(float(v))


BATCH_RE = re.compile(r"\[\[batch:(expire|error)(?:x(\d+))?\]\]")
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


class Batches:
    """OpenAI Files + Batches and Anthropic Message Batches, in memory.

    A batch completes batch_delay_s seconds after it was created (looked at
    lazily, when it is read or listed). A request whose last user message
    holds [[batch:expire]] or [[batch:error]] (xN: only in its first N
    batches) ends expired or errored; the others succeed with the same
    reply the synchronous endpoint gives. Counters (in /admin/stats
    "batch"): requests submitted, submitted again while an earlier
    submission of the same custom_id was still live or had succeeded, and
    successes (billed) per custom_id, so a test can assert that nothing
    was submitted or billed twice."""

    def __init__(self):
        self.files = {}  # id -> {"bytes": b, "purpose": p, "filename": f, "created_at": t}
        self.batches = []  # oldest first
        self.by_id = {}
        self.seq = 0
        self.pad_words = 0  # --pad-words: set from the config on each batch request
        self.submissions = {}  # custom_id -> batches it was submitted in
        self.live = {}  # custom_id -> live submissions (in a batch not yet ended)
        self.billed = {}  # custom_id -> successes
        self.counts = {"files": 0, "creates_received": 0, "batches": 0, "requests_submitted": 0, "submitted_twice": 0,
                       "billed": 0, "billed_twice": 0, "expired": 0, "errored": 0, "polls": 0,
                       "lists": 0, "downloads": 0}

    def stats(self):
        d = dict(self.counts)
        d["custom_ids"] = len(self.submissions)
        return d

    def next_id(self, prefix):
        self.seq += 1
        return "%s%d" % (prefix, self.seq)

    def add_file(self, data, purpose, filename):
        fid = self.next_id("file-")
        self.files[fid] = {"bytes": data, "purpose": purpose, "filename": filename,
                           "created_at": int(time.time())}
        self.counts["files"] += 1
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": self.files[fid]["created_at"],
                "filename": filename, "purpose": purpose}

    def create(self, kind, requests, meta):
        """requests: [(custom_id, body dict)]; kind "openai" | "anthropic"."""
        b = {"kind": kind, "id": self.next_id("batch_" if kind == "openai" else "msgbatch_"),
             "created": time.time(), "requests": requests, "ended": False, "results": None}
        b.update(meta)
        for cid, _ in requests:
            if self.live.get(cid, 0) > 0 or self.billed.get(cid, 0) > 0:
                self.counts["submitted_twice"] += 1
            self.submissions[cid] = self.submissions.get(cid, 0) + 1
            self.live[cid] = self.live.get(cid, 0) + 1
        self.counts["batches"] += 1
        self.counts["requests_submitted"] += len(requests)
        self.batches.append(b)
        self.by_id[b["id"]] = b
        return b

    def settle(self, b, delay):
        """Ends b once its time has come: every request's outcome."""
        if b["ended"] or time.time() < b["created"] + delay:
            return
        results = []
        for cid, body in b["requests"]:
            anthropic = b["kind"] == "anthropic"
            messages = body.get("messages") if isinstance(body.get("messages"), list) else []
            messages = [x for x in messages if isinstance(x, dict)]
            texts, last_user = last_user_text(messages) if messages else ([], "")
            m = BATCH_RE.search(last_user)
            outcome = "succeeded"
            if m and (m.group(2) is None or self.submissions[cid] <= int(m.group(2))):
                outcome = "expired" if m.group(1) == "expire" else "errored"
            self.live[cid] -= 1
            if outcome == "succeeded":
                self.seq += 1
                obj = reply_object(anthropic, body.get("model"), texts, last_user, body, self.seq, self.pad_words)
                self.billed[cid] = self.billed.get(cid, 0) + 1
                self.counts["billed"] += 1
                if self.billed[cid] == 2:
                    self.counts["billed_twice"] += 1
                results.append((cid, outcome, obj))
            else:
                self.counts[outcome] += 1
                results.append((cid, outcome, None))
        b["results"] = results
        b["ended"] = True
        b["ended_at"] = time.time()
        if b["kind"] == "openai":
            out = [r for r in results if r[1] == "succeeded"]
            err = [r for r in results if r[1] != "succeeded"]
            b["output_file_id"] = self.jsonl_file([self.openai_line(r) for r in out]) if out else None
            b["error_file_id"] = self.jsonl_file([self.openai_line(r) for r in err]) if err else None

    def jsonl_file(self, lines):
        fid = self.next_id("file-")
        self.files[fid] = {"bytes": "".join(json.dumps(x) + "\n" for x in lines).encode(),
                           "purpose": "batch_output", "filename": fid + ".jsonl", "created_at": int(time.time())}
        return fid

    def openai_line(self, r):
        cid, outcome, obj = r
        rid = self.next_id("batch_req_")
        if outcome == "succeeded":
            return {"id": rid, "custom_id": cid, "response": {"status_code": 200, "request_id": rid, "body": obj},
                    "error": None}
        if outcome == "expired":
            return {"id": rid, "custom_id": cid, "response": None,
                    "error": {"code": "batch_expired",
                              "message": "This request could not be executed before the completion window expired."}}
        return {"id": rid, "custom_id": cid,
                "response": {"status_code": 500, "request_id": rid,
                             "body": {"error": {"message": "The server had an error processing this request (mock).",
                                                "type": "server_error"}}},
                "error": None}

    def openai_view(self, b):
        n = len(b["requests"])
        done = b["ended"]
        res = b["results"] or []
        ok = sum(1 for r in res if r[1] == "succeeded")
        expired = any(r[1] == "expired" for r in res)
        return {"id": b["id"], "object": "batch", "endpoint": b["endpoint"], "input_file_id": b["input_file_id"],
                "completion_window": "24h",
                "status": ("expired" if expired else "completed") if done else "in_progress",
                "output_file_id": b.get("output_file_id"), "error_file_id": b.get("error_file_id"),
                "created_at": int(b["created"]), "in_progress_at": int(b["created"]),
                "expires_at": int(b["created"]) + 86400,
                "completed_at": int(b["ended_at"]) if done and not expired else None,
                "expired_at": int(b["ended_at"]) if done and expired else None,
                "request_counts": {"total": n, "completed": ok, "failed": len(res) - ok},
                "metadata": b["metadata"]}

    def anthropic_view(self, b, base):
        res = b["results"] or []
        c = {"processing": 0 if b["ended"] else len(b["requests"]), "succeeded": 0, "errored": 0,
             "canceled": 0, "expired": 0}
        for r in res:
            c[r[1]] += 1
        return {"id": b["id"], "type": "message_batch",
                "processing_status": "ended" if b["ended"] else "in_progress",
                "request_counts": c, "created_at": rfc3339(b["created"]),
                "expires_at": rfc3339(b["created"] + 86400),
                "ended_at": rfc3339(b["ended_at"]) if b["ended"] else None,
                "cancel_initiated_at": None, "archived_at": None,
                "results_url": "%s/v1/messages/batches/%s/results" % (base, b["id"]) if b["ended"] else None}

    def anthropic_results(self, b):
        lines = []
        for cid, outcome, obj in b["results"]:
            if outcome == "succeeded":
                result = {"type": "succeeded", "message": obj}
            elif outcome == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error (mock)"}}}
            else:
                result = {"type": outcome}
            lines.append(json.dumps({"custom_id": cid, "result": result}) + "\n")
        return "".join(lines).encode()


def multipart_fields(ctype, body):
    """{name: (filename or None, bytes)} of a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', ctype or "")
    if not m:
        return None
    fields = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disp = re.search(rb'name="([^"]*)"(?:; filename="([^"]*)")?', head)
        if disp:
            fname = disp.group(2).decode() if disp.group(2) is not None else None
            fields[disp.group(1).decode()] = (fname, data)
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "orch-mock-llm/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are dropped after this

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.state.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    # ---- plumbing ---------------------------------------------------------

    def send_json(self, status, obj, headers=None, count=False):
        body = json.dumps(obj).encode()
        self.send_raw(status, body, "application/json", headers, count)

    def send_raw(self, status, body, ctype, headers=None, count=False):
        if count:
            self.state.count_status(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        """Reads the request body; returns bytes, or None after replying with an error."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    self.close_connection = True
                    self.send_json(400, {"error": {"message": "bad chunked encoding",
                                                   "type": "invalid_request_error"}})
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    self.send_json(413, {"error": {"message": "body too large",
                                                   "type": "invalid_request_error"}})
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self.send_json(400, {"error": {"message": "bad Content-Length",
                                           "type": "invalid_request_error"}})
            return None
        if n > MAX_BODY:
            self.close_connection = True
            self.send_json(413, {"error": {"message": "body too large",
                                           "type": "invalid_request_error"}})
            return None
        data = self.rfile.read(n)
        if len(data) < n:
            self.close_connection = True
            return None
        return data

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            self.close_connection = True

    def dispatch(self):
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:  # never let a bug kill the connection silently
            if self.state.verbose:
                import traceback
                traceback.print_exc()
            self.close_connection = True
            try:
                self.send_json(500, {"error": {"message": "mock server bug: %r" % (e,),
                                               "type": "server_error"}})
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = dispatch

    # ---- routing ----------------------------------------------------------

    def route(self):
        if self.path.startswith("http://"):  # a client sending to it as to a proxy
            self.path = "/" + self.path[len("http://"):].partition("/")[2]
            with self.state.lock:
                self.state.proxied += 1
        path = self.path.split("?", 1)[0]
        body = self.read_body()
        if body is None:
            return
        m = self.command
        if path == "/health":
            if m in ("GET", "HEAD"):
                return self.send_raw(200, b"ok", "text/plain")
            return self.method_not_allowed()
        if path == "/admin/stats":
            if m == "GET":
                return self.send_json(200, self.state.stats())
            return self.method_not_allowed()
        if path == "/admin/reset":
            if m == "POST":
                self.state.reset()
                return self.send_json(200, {"ok": True})
            return self.method_not_allowed()
        if path == "/admin/config":
            if m == "GET":
                return self.send_json(200, self.state.get_config())
            if m == "POST":
                try:
                    changes = json.loads(body or b"{}")
                except ValueError as e:
                    return self.send_json(400, {"error": {"message": "malformed JSON: %s" % e,
                                                          "type": "invalid_request_error"}})
                cfg, err = self.state.update_config(changes)
                if err:
                    return self.send_json(400, {"error": {"message": err,
                                                          "type": "invalid_request_error"}})
                return self.send_json(200, cfg)
            return self.method_not_allowed()
        if path in LLM_PATHS:
            if m != "POST":
                return self.method_not_allowed()
            st = self.state
            with st.lock:
                st.inflight += 1
                st.max_inflight = max(st.max_inflight, st.inflight)
            try:
                return self.llm(path, body)
            finally:
                with st.lock:
                    st.inflight -= 1
        if path.startswith(("/v1/files", "/v1/batches", "/v1/messages/batches")):
            return self.batch_route(m, path, body)
        with self.state.lock:
            self.state.unknown_path += 1
        self.send_json(404, {"error": {"message": "Unknown path %s" % path,
                                       "type": "invalid_request_error", "code": "not_found"}})

    # ---- batch endpoints --------------------------------------------------

    def batch_auth(self, anthropic):
        """Replies 401/400 and returns False when the credentials are missing."""
        if anthropic:
            if not self.headers.get("x-api-key"):
                self.error(True, 401, "authentication_error", "x-api-key header is required")
                return False
            if not self.headers.get("anthropic-version"):
                self.error(True, 400, "invalid_request_error", "anthropic-version: header is required")
                return False
            return True
        parts = (self.headers.get("Authorization") or "").split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            self.error(False, 401, "invalid_request_error", "Missing bearer token")
            return False
        return True

    def batch_route(self, m, path, body):
        st = self.state
        anthropic = path.startswith("/v1/messages/batches")
        if not self.batch_auth(anthropic):
            return
        if m == "POST" and path in ("/v1/batches", "/v1/messages/batches"):
            with st.lock:
                fail = int(st.config.get("batch_create_fail", 0))
                if fail > 0:
                    st.config["batch_create_fail"] = fail - 1
                    st.batch.counts["create_failed"] = st.batch.counts.get("create_failed", 0) + 1
            if fail > 0:
                return self.error(anthropic, 500, "api_error", "The server had an error (mock): no batch created")
            with st.lock:
                st.batch.counts["creates_received"] += 1
                hold = float(st.config.get("batch_create_record_delay_s", 0))
            if hold > 0:
                st.shutdown.wait(hold)  # the client may be gone meanwhile: the batch is created all the same
        parts = path.strip("/").split("/")
        with st.lock:
            bt = st.batch
            delay = float(st.config.get("batch_delay_s", 1.0))
            bt.pad_words = st.config.get("pad_words") or 0  # replies as long as the synchronous ones
            if anthropic:
                return self.anthropic_batches(m, parts[3:], body, bt, delay)
            if parts[1] == "files":
                return self.openai_files(m, parts[2:], body, bt)
            return self.openai_batches(m, parts[2:], body, bt, delay)

    def openai_files(self, m, rest, body, bt):
        bad = "invalid_request_error"
        if m == "POST" and not rest:
            fields = multipart_fields(self.headers.get("Content-Type"), body)
            if fields is None or "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
                return self.error(False, 400, bad, "a multipart body with purpose=batch and a file is required")
            return self.send_json(200, bt.add_file(fields["file"][1], "batch", fields["file"][0] or "upload"))
        if m == "GET" and len(rest) == 2 and rest[1] == "content":
            f = bt.files.get(rest[0])
            if f is None:
                return self.error(False, 404, bad, "No such File object: %s" % rest[0])
            bt.counts["downloads"] += 1
            return self.send_raw(200, f["bytes"], "application/jsonl")
        return self.error(False, 404, bad, "Unknown files path")

    def openai_batches(self, m, rest, body, bt, delay):
        bad = "invalid_request_error"
        if m == "POST" and not rest:
            try:
                req = json.loads(body)
            except ValueError as e:
                return self.error(False, 400, bad, "Malformed JSON body: %s" % e)
            f = bt.files.get(req.get("input_file_id"))
            if f is None:
                return self.error(False, 400, bad, "input_file_id: no such file")
            if req.get("endpoint") != OPENAI_PATH or req.get("completion_window") != "24h":
                return self.error(False, 400, bad, "endpoint must be /v1/chat/completions, completion_window 24h")
            requests, seen = [], set()
            for n, line in enumerate(f["bytes"].decode().splitlines(), 1):
                try:
                    x = json.loads(line)
                except ValueError:
                    return self.error(False, 400, bad, "line %d of the input file is not JSON" % n)
                cid = x.get("custom_id")
                if (not isinstance(cid, str) or cid in seen or x.get("method") != "POST"
                        or x.get("url") != OPENAI_PATH or not isinstance(x.get("body"), dict)):
                    return self.error(False, 400, bad, "line %d: needs a unique custom_id, method POST, url %s "
                                      "and a body" % (n, OPENAI_PATH))
                seen.add(cid)
                requests.append((cid, x["body"]))
            b = bt.create("openai", requests, {"endpoint": OPENAI_PATH, "input_file_id": req["input_file_id"],
                                               "metadata": req.get("metadata") or {}})
            self.create_delay()
            return self.send_json(200, bt.openai_view(b))
        if m == "GET" and not rest:
            bt.counts["lists"] += 1
            return self.send_json(200, self.batch_page([b for b in bt.batches if b["kind"] == "openai"], bt.openai_view,
                                                       bt, delay))
        if m == "GET" and len(rest) == 1 and rest[0] in bt.by_id:
            b = bt.by_id[rest[0]]
            bt.counts["polls"] += 1
            bt.settle(b, delay)
            return self.send_json(200, bt.openai_view(b))
        return self.error(False, 404, bad, "No such batch: %s" % "/".join(rest))

    def create_delay(self):
        """Holds the answer to a create call batch_create_delay_s seconds
        (the batch exists meanwhile), so a test can kill its client before
        it learns the batch's id."""
        st = self.state
        d = float(st.config.get("batch_create_delay_s", 0))
        if d > 0:
            st.lock.release()
            try:
                st.shutdown.wait(d)
            finally:
                st.lock.acquire()

    def batch_page(self, batches, view, bt, delay):
        """A list page, newest first, honouring ?limit= and ?after=."""
        q = dict(x.split("=", 1) for x in self.path.partition("?")[2].split("&") if "=" in x)
        after, limit = q.get("after") or q.get("after_id"), int(q.get("limit", "20"))
        newest = list(reversed(batches))
        if after:
            ids = [b["id"] for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        for b in page:
            bt.settle(b, delay)
        data = [view(b) for b in page]
        return {"object": "list", "data": data, "has_more": len(newest) > limit,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def anthropic_batches(self, m, rest, body, bt, delay):
        bad = "invalid_request_error"
        base = "http://%s:%d" % self.server.server_address[:2]
        if m == "POST" and not rest:
            try:
                req = json.loads(body)
            except ValueError as e:
                return self.error(True, 400, bad, "Malformed JSON body: %s" % e)
            requests, seen = [], set()
            for n, x in enumerate(req.get("requests") or [], 1):
                cid = x.get("custom_id") if isinstance(x, dict) else None
                if (not isinstance(cid, str) or not CUSTOM_ID_RE.match(cid) or cid in seen
                        or not isinstance(x.get("params"), dict)):
                    return self.error(True, 400, bad, "requests.%d: needs a unique custom_id matching "
                                      "^[a-zA-Z0-9_-]{1,64}$ and params" % (n - 1))
                seen.add(cid)
                requests.append((cid, x["params"]))
            if not requests:
                return self.error(True, 400, bad, "requests: must be a non-empty array")
            b = bt.create("anthropic", requests, {})
            self.create_delay()
            return self.send_json(200, bt.anthropic_view(b, base))
        if m == "GET" and not rest:
            bt.counts["lists"] += 1
            return self.send_json(200, self.batch_page([b for b in bt.batches if b["kind"] == "anthropic"],
                                                       lambda b: bt.anthropic_view(b, base), bt, delay))
        b = bt.by_id.get(rest[0]) if rest else None
        if m == "GET" and b is not None and len(rest) == 1:
            bt.counts["polls"] += 1
            bt.settle(b, delay)
            return self.send_json(200, bt.anthropic_view(b, base))
        if m == "GET" and b is not None and rest[1:] == ["results"] and b["ended"]:
            bt.counts["downloads"] += 1
            return self.send_raw(200, bt.anthropic_results(b), "application/binary")
        return self.error(True, 404, "not_found_error", "No such batch: %s" % "/".join(rest))

    def method_not_allowed(self):
        self.send_json(405, {"error": {"message": "Method %s not allowed" % self.command,
                                       "type": "invalid_request_error"}})

    # ---- LLM endpoints ----------------------------------------------------

    def error(self, anthropic, status, etype, message, code=None, headers=None):
        if anthropic:
            obj = {"type": "error", "error": {"type": etype, "message": message}}
        else:
            obj = {"error": {"message": message, "type": etype}}
            if code:
                obj["error"]["code"] = code
        self.send_json(status, obj, headers, count=True)

    def llm(self, path, body):
        st = self.state
        anthropic = path == ANTHROPIC_PATH
        attempt, seq = st.begin(path, body)
        extra = {"X-Mock-Attempt": str(attempt)}
        bad_req = "invalid_request_error"

        try:
            req = json.loads(body)
        except ValueError as e:
            return self.error(anthropic, 400, bad_req, "Malformed JSON body: %s" % e)
        if not isinstance(req, dict):
            return self.error(anthropic, 400, bad_req, "Request body must be a JSON object")

        # authentication
        st.note_auth(self.headers.get("x-api-key" if anthropic else "Authorization") or "")
        if anthropic:
            if not self.headers.get("x-api-key"):
                return self.error(True, 401, "authentication_error", "x-api-key header is required")
            if self.headers.get("x-api-key") == BAD_KEY:
                return self.error(True, 401, "authentication_error", "invalid x-api-key")
            if not self.headers.get("anthropic-version"):
                return self.error(True, 400, bad_req, "anthropic-version: header is required")
        else:
            auth = self.headers.get("Authorization") or ""
            parts = auth.split(None, 1)
            if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1].strip():
                return self.error(False, 401, bad_req, "Missing bearer token")
            if parts[1].strip() == BAD_KEY:
                return self.error(False, 401, bad_req, "Incorrect API key provided", "invalid_api_key")

        # validation
        model = req.get("model")
        messages = req.get("messages")
        if not isinstance(model, str) or not model:
            return self.error(anthropic, 400, bad_req, "model: field required (string)")
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(x, dict) for x in messages)):
            return self.error(anthropic, 400, bad_req, "messages: must be a non-empty array of objects")
        if anthropic and (isinstance(req.get("max_tokens"), bool)
                          or not isinstance(req.get("max_tokens"), int)):
            return self.error(True, 400, bad_req, "max_tokens: field required (integer)")

        texts = [content_text(x.get("content")) for x in messages]
        last_user = None
        for x, t in zip(reversed(messages), reversed(texts)):
            if x.get("role") == "user":
                last_user = t
                break
        if last_user is None:
            last_user = texts[-1]

        cfg = st.get_config()
        fault = choose_fault(cfg, attempt, body, last_user)
        if fault:
            st.count_fault(fault)
            extra["X-Mock-Fault"] = fault
        if fault == "429":
            ra = cfg["retry_after"]
            if cfg["retry_after_date"]:
                # an HTTP-date has 1 s resolution: round up so it is never in the past
                extra["Retry-After"] = email.utils.formatdate(math.ceil(time.time() + ra), usegmt=True)
            else:
                extra["Retry-After"] = fmt_seconds(ra)
            return self.error(anthropic, 429, "rate_limit_error",
                              "Rate limit reached for requests (mock). Please retry after %s seconds."
                              % fmt_seconds(ra), "rate_limit_exceeded", extra)
        if fault == "500":
            return self.error(anthropic, 500, "api_error" if anthropic else "server_error",
                              "The server had an error while processing your request (mock).",
                              None, extra)
        if fault == "404":
            return self.model_not_found(anthropic, model, extra)
        if fault == "400":
            return self.error(anthropic, 400, bad_req, "Bad request (mock fault injection)", None, extra)
        if fault == "garbage":
            return self.send_raw(200, b'{"choices": [', "application/json", extra, count=True)
        if fault == "hang":
            return self.hang(cfg)

        if model == UNKNOWN_MODEL:
            return self.model_not_found(anthropic, model, extra)

        obj = reply_object(anthropic, model, texts, last_user, req, seq, cfg.get("pad_words"))

        if cfg.get("omit_usage"):
            del obj["usage"]

        if fault == "slow":
            time.sleep(cfg["slow_ms"] / 1000.0)
        if cfg["latency_ms"] > 0:
            time.sleep(cfg["latency_ms"] / 1000.0)

        if fault == "truncate":
            data = json.dumps(obj).encode()
            st.count_status(200)
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_json(200, obj, extra, count=True)

    def model_not_found(self, anthropic, model, extra):
        if anthropic:
            return self.error(True, 404, "not_found_error", "model: %s" % model, None, extra)
        return self.error(False, 404, "invalid_request_error",
                          "The model `%s` does not exist" % model, "model_not_found", extra)

    def hang(self, cfg):
        st = self.state
        with st.lock:
            st.hanging += 1
        try:
            st.shutdown.wait(cfg["hang_s"])
        finally:
            with st.lock:
                st.hanging -= 1
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if self.state.verbose:
            super().handle_error(request, client_address)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Mock OpenAI/Anthropic HTTP server for orch tests.")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port, 0 = pick a free one (default)")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay of every successful answer")
    ap.add_argument("--fail-429", type=float, default=0.0)
    ap.add_argument("--fail-500", type=float, default=0.0)
    ap.add_argument("--garbage", type=float, default=0.0)
    ap.add_argument("--hang", type=float, default=0.0)
    ap.add_argument("--truncate", type=float, default=0.0)
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--seed", default="0")
    ap.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429")
    ap.add_argument("--retry-after-date", action="store_true", help="send Retry-After as an HTTP-date")
    ap.add_argument("--slow-ms", type=float, default=2000.0, help="delay of a 'slow' fault")
    ap.add_argument("--pad-words", type=int, default=0, help="add 0..N words to each reply")
    ap.add_argument("--omit-usage", action="store_true", help="leave usage out of every reply")
    ap.add_argument("--hang-s", type=float, default=300.0, help="how long a 'hang' fault holds the request")
    ap.add_argument("--batch-delay-s", type=float, default=1.0,
                    help="how long after its creation a batch completes")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = ap.parse_args(argv)
    for k in RATE_KEYS:
        v = getattr(a, k)
        if not 0 <= v <= 1:
            ap.error("--%s must be from 0 to 1" % k.replace("_", "-"))
    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.host.startswith("127."):
        ap.error("--host must be a loopback address")
    try:
        a.seed = int(a.seed)
    except ValueError:
        pass
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    config = {k: getattr(a, k) for k in RATE_KEYS}
    config.update(latency_ms=a.latency_ms, seed=a.seed, retry_after=a.retry_after,
                  retry_after_date=a.retry_after_date, slow_ms=a.slow_ms, hang_s=a.hang_s)
    config["omit_usage"] = a.omit_usage
    config["pad_words"] = a.pad_words
    config["batch_delay_s"] = a.batch_delay_s
    for k in ("latency_ms", "retry_after", "slow_ms", "hang_s"):
        if float(config[k]).is_integer():
            config[k] = int(config[k])
    state = State(config, a.verbose)

    threading.stack_size(512 * 1024)  # many connections, many threads
    if a.port_file:
        try:
            os.unlink(a.port_file)
        except FileNotFoundError:
            pass
    host = "127.0.0.1" if a.host == "localhost" else a.host
    if ":" in host:
        Server.address_family = socket.AF_INET6
    try:
        server = Server((host, a.port), Handler)
    except OSError as e:
        sys.stderr.write("llm_server: cannot bind %s:%d: %s\n" % (host, a.port, e))
        return 1
    server.state = state
    port = server.server_address[1]

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()

    if a.port_file:
        tmp = "%s.tmp.%d" % (a.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, a.port_file)
    print("listening on %s:%d" % (host, port), flush=True)

    while not stop.wait(1.0):
        pass
    state.shutdown.set()  # release hanging requests
    server.shutdown()
    server.server_close()
    if a.verbose:
        sys.stderr.write("llm_server: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
