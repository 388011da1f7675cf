"""Baseline for bench/passthrough.lua: csv.DictReader -> one dict update ->
json.dumps per row, single-threaded (the floor a Python loop costs)."""
import csv, json, sys

src = sys.argv[1] if len(sys.argv) > 1 else "/tmp/orch-bench-rows.csv"
out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/py-bench-rows.jsonl"
with open(src, newline="") as f, open(out, "w") as o:
    for row in csv.DictReader(f):
        row["n"] = len(row["text"])
        o.write(json.dumps(row, separators=(",", ":")) + "\n")
