"""Baseline for bench/llm.lua with asyncio + aiohttp (Debian's
python3-aiohttp, so run it with /usr/bin/python3): the same chat-completion
calls, at most C at once over one keep-alive connection pool, results
written in input order.
  /usr/bin/python3 bench/llm_aiohttp.py BASE_URL N OUT [CONCURRENCY]"""
import asyncio, json, sys

import aiohttp

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
out = sys.argv[3] if len(sys.argv) > 3 else "/tmp/py-bench-aiohttp.jsonl"
conc = int(sys.argv[4]) if len(sys.argv) > 4 else 200


async def main():
    sem = asyncio.Semaphore(conc)
    conn = aiohttp.TCPConnector(limit=conc)
    headers = {"Authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=conn, headers=headers) as s:
        async def call(i):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Classify: review number %d" % i}]}
            async with sem:
                async with s.post(base + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    d = await r.json()
            return {"id": i, "label": d["choices"][0]["message"]["content"]}
        rows = await asyncio.gather(*(call(i) for i in range(1, n + 1)))
    with open(out, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")

asyncio.run(main())
