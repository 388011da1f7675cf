"""Baseline for bench/sleep.lua: the same 1,000 x 0.1 s waits with a
ThreadPoolExecutor of 100 threads, writing rows in input order as JSONL."""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/py-bench-sleep.jsonl"

def work(i):
    time.sleep(0.1)
    return {"id": i}

with ThreadPoolExecutor(max_workers=100) as pool, open(out, "w") as f:
    for row in pool.map(work, range(1, n + 1)):
        f.write(json.dumps(row, separators=(",", ":")) + "\n")
