// Node baseline for bench/llm.lua: the same chat-completion calls with the
// official openai SDK, at most C at once (p-limit), results written in
// input order as JSONL.
//   node bench/llm_node.mjs BASE_URL N OUT [CONCURRENCY]
// (bench/run.sh installs the packages of bench/package.json with npm)
import fs from "node:fs";
import OpenAI from "openai";
import pLimit from "p-limit";

const [base, n = "4000", out = "/tmp/node-bench-llm.jsonl", conc = "200"] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: "bench", maxRetries: 0, timeout: 30000 });
const limit = pLimit(Number(conc));
const calls = [];
for (let i = 1; i <= Number(n); i++) {
  calls.push(limit(async () => {
    const r = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: `Classify: review number ${i}` }],
    });
    return { id: i, label: r.choices[0].message.content };
  }));
}
const rows = await Promise.all(calls);
fs.writeFileSync(out, rows.map((r) => JSON.stringify(r) + "\n").join(""));
