"""Baseline for bench/llm.lua: the same chat-completion calls with a
ThreadPoolExecutor (urllib), results written in input order.
  python3 bench/llm_baseline.py BASE_URL N OUT [THREADS [JOURNAL.db]]
With JOURNAL.db, the durable variant a careful hand-written script is:
each reply is stored in SQLite (WAL, one commit per reply) the moment it
arrives, and a rerun takes it from there instead of paying again."""
import hashlib, json, sqlite3, sys, threading, urllib.request
from concurrent.futures import ThreadPoolExecutor

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
out = sys.argv[3] if len(sys.argv) > 3 else "/tmp/py-bench-llm.jsonl"
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 200
journal = sys.argv[5] if len(sys.argv) > 5 else None

db, lock = None, threading.Lock()
if journal:
    db = sqlite3.connect(journal, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS journal (key TEXT PRIMARY KEY, reply TEXT)")


def call(i):
    body = json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": "Classify: review number %d" % i}]}).encode()
    key = hashlib.sha256(body).hexdigest()
    if db is not None:
        with lock:
            hit = db.execute("SELECT reply FROM journal WHERE key = ?", (key,)).fetchone()
        if hit:
            return {"id": i, "label": json.loads(hit[0])["choices"][0]["message"]["content"]}
    req = urllib.request.Request(base + "/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer bench"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    if db is not None:
        with lock:
            db.execute("INSERT OR IGNORE INTO journal VALUES (?, ?)", (key, raw.decode()))
    d = json.loads(raw)
    return {"id": i, "label": d["choices"][0]["message"]["content"]}


with ThreadPoolExecutor(max_workers=threads) as pool, open(out, "w") as f:
    for row in pool.map(call, range(1, n + 1)):
        f.write(json.dumps(row, separators=(",", ":")) + "\n")
