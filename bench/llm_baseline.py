"""Baseline for bench/llm.lua: the same 4,000 chat-completion calls with a
ThreadPoolExecutor of 200 threads (urllib), results written in input order."""
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
out = sys.argv[3] if len(sys.argv) > 3 else "/tmp/py-bench-llm.jsonl"

def call(i):
    body = json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": "Classify: review number %d" % i}]}).encode()
    req = urllib.request.Request(base + "/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer bench"})
    with urllib.request.urlopen(req, timeout=30) as r:
        d = json.load(r)
    return {"id": i, "label": d["choices"][0]["message"]["content"]}

with ThreadPoolExecutor(max_workers=200) as pool, open(out, "w") as f:
    for row in pool.map(call, range(1, n + 1)):
        f.write(json.dumps(row) + "\n")
