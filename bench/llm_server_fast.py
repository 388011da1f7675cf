#!/usr/bin/env python3
"""A provider-like mock for the HTTP benchmarks (Python 3 stdlib, asyncio).

  python3 bench/llm_server_fast.py --port 0 --port-file /tmp/p [--latency-ms 250]

It answers POST /v1/chat/completions the way a real provider's front end
does: HTTP/1.1 keep-alive, each response (headers and body) in one write,
one event loop, no thread per connection. tests/llm_server.py, the test
server, is thread-per-connection and writes the headers and the body in
two writes, so a client there pays two wake-ups and reads per reply and
shares the cores with 200 server threads: a floor measured against it
is the server's cost as much as the client's. The reply is the test
server's for a plain message: "echo: " + the first 60 characters of the
last user message, with usage. GET /stats answers {"requests": N,
"received": R, "peak_in_flight": M, "connections": K}: the completions
answered so far, those received (answered or not yet), the most it held
at once, and the connections that carried any; GET /stats/reset starts
the peak again.
"""

import argparse
import asyncio
import json
import math
import os


def reply(body):
    try:
        req = json.loads(body)
        msgs = req.get("messages") or []
        last = next((m for m in reversed(msgs) if m.get("role") == "user"), {"content": ""})
        text = "echo: " + str(last.get("content", ""))[:60]
        chars = sum(len(str(m.get("content", ""))) for m in msgs)
        obj = {"id": "chatcmpl-bench", "object": "chat.completion", "model": req.get("model", ""),
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": math.ceil(chars / 4) + 5,
                         "completion_tokens": math.ceil(len(text) / 4),
                         "total_tokens": math.ceil(chars / 4) + 5 + math.ceil(len(text) / 4)}}
        return 200, json.dumps(obj).encode()
    except (ValueError, AttributeError, TypeError):
        return 400, b'{"error":{"message":"bad request body"}}'


served = [0]  # chat completions answered
received = [0]  # chat completions received, answered or not
inflight, peak = [0], [0]  # requests being answered now, and the most at once
conns = [0]  # connections that carried a completion (a client reconnecting shows here)


async def serve(reader, writer, latency):
    used = False
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length, conn = 0, b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection":
                    conn = value.strip().lower()
            # HTTP/1.1 keeps the connection unless told not to; 1.0 (ab) only when asked
            keep = conn != b"close" if lines[0].endswith(b"/1.1") else conn == b"keep-alive"
            body = await reader.readexactly(length) if length else b""
            if lines[0].startswith(b"GET /stats"):
                if lines[0].startswith(b"GET /stats/reset"):
                    peak[0] = inflight[0]
                # the replies sent so far (bench/run.sh counts calls paid twice)
                status, data = 200, json.dumps({"requests": served[0], "received": received[0], "peak_in_flight": peak[0],
                                                 "connections": conns[0]}).encode()
            else:
                if not used:
                    used = True
                    conns[0] += 1
                inflight[0] += 1
                received[0] += 1
                peak[0] = max(peak[0], inflight[0])
                if latency:
                    await asyncio.sleep(latency)
                status, data = reply(body)
                served[0] += 1
                inflight[0] -= 1
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                         % (status, b"OK" if status == 200 else b"Bad Request", len(data),
                            b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n", data))
            if not keep:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--latency-ms", type=float, default=0)
    a = ap.parse_args()
    latency = a.latency_ms / 1000
    srv = await asyncio.start_server(lambda r, w: serve(r, w, latency), a.host, a.port, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, a.port_file)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
