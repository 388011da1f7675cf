#!/usr/bin/env bash
# The quick start: installs what is missing, builds orch, and runs the
# example workflow offline (mock provider), writing out/reviews-sentiment.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
./build/orch run examples/classify_reviews.lua
echo "first rows of out/reviews-sentiment.jsonl:"
head -n 3 out/reviews-sentiment.jsonl
