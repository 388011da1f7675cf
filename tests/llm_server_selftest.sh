#!/usr/bin/env bash
# Self-test of tests/llm_server.py (the mock LLM HTTP server).
# Run from anywhere: bash tests/llm_server_selftest.sh
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER="$HERE/llm_server.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/llm_selftest.XXXXXX")
SPID=""
cleanup() {
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then kill -KILL "$SPID" 2>/dev/null; fi
  if [ -n "${PY_PID:-}" ]; then kill "$PY_PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; }
expect_eq() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected [$3], got [$2]"; fi; }
# expect_py NAME FILE EXPR : EXPR (python, `d` = parsed JSON of FILE) must be true.
# One python process (a coprocess) evaluates every check: python starts slowly.
coproc PY { python3 -u -c '
import json, sys
for line in sys.stdin:
    f, expr = line.rstrip("\n").split("\t", 1)
    try:
        d = json.load(open(f))
        r = "1" if eval(expr) else "0"
    except Exception as e:
        r = "0 %r" % (e,)
    print(r.replace("\n", " "))
'; }
expect_py() {
  local r
  printf '%s\t%s\n' "$2" "$3" >&"${PY[1]}"
  read -r r <&"${PY[0]}"
  if [ "$r" = 1 ]; then ok "$1"; else bad "$1: ($3) on $(head -c 400 "$2") ${r#0}"; fi
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- start --------------------------------------------------------------
python3 "$SERVER" --port 0 --port-file "$T/port" >"$T/server.out" 2>"$T/server.err" &
SPID=$!
for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
PORT=$(cat "$T/port" 2>/dev/null)
if [ -z "$PORT" ]; then bad "server did not write its port file"; cat "$T/server.err"; echo "$PASS passed, $FAIL failed"; exit 1; fi
ok "port file written ($PORT)"
for _ in $(seq 1 40); do [ -s "$T/server.out" ] && break; sleep 0.05; done
expect_eq "stdout announces the port" "$(head -1 "$T/server.out")" "listening on 127.0.0.1:$PORT"
B="http://127.0.0.1:$PORT"

# oa NAME BODY [extra curl args...] : POST to the OpenAI endpoint with a good key.
# Writes $T/NAME.body and $T/NAME.hdr, sets CODE (HTTP status) and RC (curl exit).
oa() {
  local n=$1 body=$2; shift 2
  CODE=$(curl -sS -o "$T/$n.body" -D "$T/$n.hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
    -H 'Authorization: Bearer sk-test' "$@" --data-binary "$body" "$B/v1/chat/completions" 2>"$T/$n.err")
  RC=$?
}
an() {
  local n=$1 body=$2; shift 2
  CODE=$(curl -sS -o "$T/$n.body" -D "$T/$n.hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
    -H 'x-api-key: sk-ant' -H 'anthropic-version: 2023-06-01' "$@" --data-binary "$body" "$B/v1/messages" 2>"$T/$n.err")
  RC=$?
}
msg() { printf '{"model":"gpt-test","messages":[{"role":"user","content":"%s"}]}' "$1"; }
admin() { curl -sS -o "$T/$1.body" -w '%{http_code}' -X "$2" ${3:+--data-binary "$3"} "$B/admin/$1" 2>/dev/null; }
# waits (up to 10 s) until the server holds a hanging request, so what
# follows happens while it hangs, whatever the machine's speed
wait_hanging() {
  for _ in $(seq 1 200); do
    admin stats GET >/dev/null
    grep -Eq '"hanging": *[1-9]' "$T/stats.body" && return 0
    sleep 0.05
  done
  return 1
}

# ---- basics -------------------------------------------------------------
expect_eq "GET /health" "$(curl -sS "$B/health")" "ok"
CODE=$(curl -sS -o "$T/nf.body" -w '%{http_code}' "$B/nope")
expect_eq "unknown path -> 404" "$CODE" "404"
expect_py "unknown path error body" "$T/nf.body" "'message' in d['error']"

# ---- OpenAI success -----------------------------------------------------
oa ok1 '{"model":"gpt-test","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there"}],"temperature":0,"max_tokens":50}'
expect_eq "openai 200" "$CODE" "200"
expect_py "openai shape" "$T/ok1.body" "d['object']=='chat.completion' and d['id'].startswith('chatcmpl-') and d['model']=='gpt-test' and d['choices'][0]['index']==0 and d['choices'][0]['message']=={'role':'assistant','content':'echo: Hello there'} and d['choices'][0]['finish_reason']=='stop'"
# prompt chars 14+11=25 -> ceil(25/4)+5 = 12; "echo: Hello there" = 17 chars -> 5
expect_py "openai usage" "$T/ok1.body" "d['usage']=={'prompt_tokens':12,'completion_tokens':5,'total_tokens':17}"
grep -qi '^Content-Type: application/json' "$T/ok1.hdr" && ok "content-type header" || bad "content-type header"
oa long "$(msg "$(printf 'a%.0s' $(seq 1 100))")"
expect_py "echo truncated to 60 chars" "$T/long.body" "d['choices'][0]['message']['content']=='echo: '+'a'*60 and d['usage']['prompt_tokens']==30"

# JSON replies
oa js1 "$(msg 'Reply in JSON please')"
expect_py "JSON keyword -> JSON object text" "$T/js1.body" "json.loads(d['choices'][0]['message']['content'])=={'answer':'echo: Reply in JSON please','length':20}"
oa js2 '{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}'
expect_py "response_format json_object" "$T/js2.body" "json.loads(d['choices'][0]['message']['content'])=={'answer':'echo: hi','length':2} and d['usage']['completion_tokens']==9"

# ---- OpenAI errors ------------------------------------------------------
CODE=$(curl -sS -o "$T/na.body" -w '%{http_code}' --data-binary "$(msg hi)" "$B/v1/chat/completions")
expect_eq "no bearer -> 401" "$CODE" "401"
expect_py "no bearer body" "$T/na.body" "d=={'error':{'message':'Missing bearer token','type':'invalid_request_error'}}"
CODE=$(curl -sS -o "$T/bk.body" -w '%{http_code}' -H 'Authorization: Bearer bad-key' --data-binary "$(msg hi)" "$B/v1/chat/completions")
expect_eq "bad-key -> 401" "$CODE" "401"
expect_py "bad-key body" "$T/bk.body" "d['error']['message']=='Incorrect API key provided'"
oa nm '{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}'
expect_eq "unknown model -> 404" "$CODE" "404"
expect_py "model_not_found body" "$T/nm.body" "d=={'error':{'message':'The model \`no-such-model\` does not exist','type':'invalid_request_error','code':'model_not_found'}}"
oa mal '{"model": "x", "messages": [' 
expect_eq "malformed JSON -> 400" "$CODE" "400"
expect_py "malformed JSON error body" "$T/mal.body" "d['error']['type']=='invalid_request_error'"
oa nomsg '{"model":"gpt-test"}'
expect_eq "missing messages -> 400" "$CODE" "400"

# ---- Anthropic ----------------------------------------------------------
an a1 '{"model":"claude-test","system":"Be brief.","messages":[{"role":"user","content":"What is 2+2?"}],"max_tokens":100}'
expect_eq "anthropic 200" "$CODE" "200"
# chars 9+12=21 -> 6+5 = 11; "echo: What is 2+2?" = 18 -> 5
expect_py "anthropic shape+usage" "$T/a1.body" "d['id'].startswith('msg_') and d['type']=='message' and d['role']=='assistant' and d['model']=='claude-test' and d['content']==[{'type':'text','text':'echo: What is 2+2?'}] and d['stop_reason']=='end_turn' and d['usage']=={'input_tokens':11,'output_tokens':5}"
an a2 '{"model":"claude-test","messages":[{"role":"user","content":[{"type":"text","text":"give JSON"}]}],"max_tokens":100}'
expect_py "anthropic block content + JSON" "$T/a2.body" "json.loads(d['content'][0]['text'])=={'answer':'echo: give JSON','length':9}"
CODE=$(curl -sS -o "$T/a3.body" -w '%{http_code}' -H 'anthropic-version: 2023-06-01' --data-binary '{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5}' "$B/v1/messages")
expect_eq "anthropic no x-api-key -> 401" "$CODE" "401"
expect_py "anthropic auth error body" "$T/a3.body" "d=={'type':'error','error':{'type':'authentication_error','message':'x-api-key header is required'}}"
CODE=$(curl -sS -o "$T/a4.body" -w '%{http_code}' -H 'x-api-key: k' --data-binary '{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5}' "$B/v1/messages")
expect_eq "anthropic no version -> 400" "$CODE" "400"
expect_py "anthropic version error body" "$T/a4.body" "d['type']=='error' and d['error']['type']=='invalid_request_error'"
an a5 '{"model":"no-such-model","messages":[{"role":"user","content":"x"}],"max_tokens":5}'
expect_eq "anthropic unknown model -> 404" "$CODE" "404"
an a6 '{"model":"claude-test","messages":[{"role":"user","content":"[[fault:429]] x"}],"max_tokens":5}'
expect_eq "anthropic 429" "$CODE" "429"
expect_py "anthropic 429 body" "$T/a6.body" "d['type']=='error' and d['error']['type']=='rate_limit_error' and 'Rate limit reached' in d['error']['message']"

# ---- fault directives ---------------------------------------------------
oa f429 "$(msg '[[fault:429]] a')"
expect_eq "fault 429" "$CODE" "429"
expect_py "429 body" "$T/f429.body" "'Rate limit reached' in d['error']['message']"
grep -qi '^Retry-After: 1' "$T/f429.hdr" && ok "429 Retry-After: 1" || bad "429 Retry-After missing"
oa f500 "$(msg '[[fault:500]] a')"
expect_eq "fault 500" "$CODE" "500"
expect_py "500 body" "$T/f500.body" "'message' in d['error']"
oa f404 "$(msg '[[fault:404]] a')"
expect_eq "fault 404" "$CODE" "404"
expect_py "404 body" "$T/f404.body" "d['error']['code']=='model_not_found'"
oa f400 "$(msg '[[fault:400]] a')"
expect_eq "fault 400" "$CODE" "400"
expect_py "400 body" "$T/f400.body" "d['error']['type']=='invalid_request_error'"
oa fg "$(msg '[[fault:garbage]] a')"
expect_eq "fault garbage status 200" "$CODE" "200"
expect_eq "garbage body" "$(cat "$T/fg.body")" '{"choices": ['
grep -qi '^Content-Type: application/json' "$T/fg.hdr" && ok "garbage content-type json" || bad "garbage content-type"
oa ft "$(msg '[[fault:truncate]] a')"
expect_eq "fault truncate -> curl exit 18" "$RC" "18"
S=$(now_ms)
oa fs "$(msg '[[fault:slow]] a')"
E=$(( $(now_ms) - S ))
expect_eq "fault slow still 200" "$CODE" "200"
[ "$E" -ge 1950 ] && ok "slow took ${E} ms (>= 2 s)" || bad "slow took ${E} ms"
# hang: curl gives up after 1 s; the server keeps serving others meanwhile
oa fh "$(msg '[[fault:hang]] a')" --max-time 1 &
HPID=$!
wait_hanging
expect_eq "other requests served during a hang" "$(curl -sS --max-time 1 "$B/health")" "ok"
admin stats GET >/dev/null
expect_py "stats show a hanging request" "$T/stats.body" "d['hanging']>=1"
wait $HPID
expect_eq "fault hang -> curl timeout (28)" "$(grep -c 'timed out' "$T/fh.err")" "1"

# 429x2: two 429s, then success for the identical body
BODY=$(msg '[[fault:429x2]] retry me')
oa r1 "$BODY"; C1=$CODE; grep -qi '^Retry-After:' "$T/r1.hdr" && RA1=yes || RA1=no
oa r2 "$BODY"; C2=$CODE
oa r3 "$BODY"; C3=$CODE
expect_eq "429x2 sequence" "$C1 $C2 $C3" "429 429 200"
expect_eq "429x2 Retry-After present" "$RA1" "yes"
grep -qi '^X-Mock-Attempt: 3' "$T/r3.hdr" && ok "third attempt numbered 3" || bad "attempt header"
BODY=$(msg '[[fault:500x3]] retry me')
S=""; for i in 1 2 3 4; do oa r5 "$BODY"; S="$S$CODE "; done
expect_eq "500x3 sequence" "$S" "500 500 500 200 "

# ---- /admin/config ------------------------------------------------------
expect_eq "config retry_after_date" "$(admin config POST '{"retry_after_date":true,"retry_after":5}')" "200"
oa rd "$(msg '[[fault:429]] date')"
grep -Eqi '^Retry-After: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT' "$T/rd.hdr" && ok "Retry-After as HTTP-date" || bad "Retry-After date: $(grep -i retry-after "$T/rd.hdr")"
admin config POST '{"retry_after_date":false,"retry_after":1}' >/dev/null
expect_eq "config fail_500=1" "$(admin config POST '{"fail_500":1.0}')" "200"
expect_py "config reply has new value" "$T/config.body" "d['fail_500']==1.0 and d['fail_429']==0"
S=""; for i in 1 2 3 4 5; do oa c$i "$(msg "cfg $i")"; S="$S$CODE "; done
expect_eq "fail_500=1 -> all 500" "$S" "500 500 500 500 500 "
admin config POST '{"fail_500":0}' >/dev/null
S=""; for i in 1 2 3 4 5; do oa c$i "$(msg "cfg $i")"; S="$S$CODE "; done
expect_eq "fail_500=0 -> all 200" "$S" "200 200 200 200 200 "
expect_eq "bad config key -> 400" "$(admin config POST '{"nope":1}')" "400"
expect_eq "bad rate -> 400" "$(admin config POST '{"fail_429":2}')" "400"
expect_eq "malformed config -> 400" "$(admin config POST '{')" "400"
# omit_usage: a reply without "usage", as some servers and proxies send
expect_eq "config omit_usage" "$(admin config POST '{"omit_usage":true}')" "200"
oa nu "$(msg 'no usage please')"
expect_py "omit_usage -> no usage object" "$T/nu.body" "'usage' not in d and d['choices'][0]['message']['content']=='echo: no usage please'"
expect_eq "omit_usage must be a boolean" "$(admin config POST '{"omit_usage":1}')" "400"
admin config POST '{"omit_usage":false}' >/dev/null
oa nu2 "$(msg 'usage again')"
expect_py "omit_usage off -> usage back" "$T/nu2.body" "d['usage']['prompt_tokens']>0"
admin stats GET >/dev/null
expect_py "stats count requests by Authorization" "$T/stats.body" "d['authorization'].get('Bearer sk-test',0)>=2"

# determinism and retries with global rates (python: one keep-alive connection)
cat >"$T/det.py" <<'EOF'
import http.client, json, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
def req(method, path, body=None, hdr=None):
    c.request(method, path, body=body, headers=hdr or {})
    r = c.getresponse(); data = r.read()
    return r.status, data
H = {"Authorization": "Bearer k", "Content-Type": "application/json"}
def run():
    req("POST", "/admin/reset")
    req("POST", "/admin/config", json.dumps({"fail_429": 0.3, "fail_500": 0.2, "seed": 7}))
    return [req("POST", "/v1/chat/completions",
                json.dumps({"model": "m", "messages": [{"role": "user", "content": "q%d" % i}]}), H)[0]
            for i in range(30)]
a, b = run(), run()
assert a == b, (a, b)
assert 429 in a and 500 in a and 200 in a, a
# a retried identical body gets a fresh draw: find one that fails first, retry it until it succeeds
for k in range(100):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "retry %d" % k}]})
    seq = [req("POST", "/v1/chat/completions", body, H)[0]]
    if seq[0] != 200:
        break
assert seq[0] != 200, "no failing body found"
while seq[-1] != 200 and len(seq) < 30:
    seq.append(req("POST", "/v1/chat/completions", body, H)[0])
assert seq[-1] == 200, seq
# different seed, different pattern
req("POST", "/admin/config", json.dumps({"seed": 8}))
req("POST", "/admin/reset")
c2 = [req("POST", "/v1/chat/completions",
          json.dumps({"model": "m", "messages": [{"role": "user", "content": "q%d" % i}]}), H)[0] for i in range(30)]
assert c2 != a, "seed has no effect"
req("POST", "/admin/config", json.dumps({"fail_429": 0, "fail_500": 0, "seed": 0}))
print("determinism ok; retry sequence", seq)
EOF
OUT=$(python3 "$T/det.py" "$PORT" 2>&1) && ok "rates: reproducible, retries succeed, seed matters ($OUT)" || bad "rates: $OUT"

# ---- /admin/stats and /admin/reset --------------------------------------
expect_eq "reset" "$(admin reset POST)" "200"
oa s1 "$(msg 'stat A')"
oa s2 "$(msg 'stat A')"
oa s3 "$(msg 'stat B')"
oa s4 "$(msg '[[fault:429]] stat C')"
an s5 '{"model":"claude-test","messages":[{"role":"user","content":"stat D"}],"max_tokens":5}'
admin stats GET >/dev/null
expect_py "stats counts" "$T/stats.body" "d['requests']==5 and d['by_status']=={'200':4,'429':1} and d['by_path']=={'/v1/chat/completions':4,'/v1/messages':1} and d['unique_bodies']==4 and d['max_attempts_per_body']==2 and d['duplicates']==1"
admin reset POST >/dev/null
admin stats GET >/dev/null
expect_py "stats zero after reset" "$T/stats.body" "d['requests']==0 and d['by_status']=={} and d['unique_bodies']==0 and d['duplicates']==0 and d['max_attempts_per_body']==0"
oa s6 "$(msg 'stat A')"
grep -qi '^X-Mock-Attempt: 1' "$T/s6.hdr" && ok "reset forgets attempts" || bad "reset forgets attempts"

# ---- keep-alive / Connection: close -------------------------------------
curl -sS -v -o /dev/null -o /dev/null "$B/health" "$B/health" 2>"$T/ka.err"
grep -q 'Re-using existing connection' "$T/ka.err" && ok "keep-alive reuse" || bad "keep-alive reuse"
oa cc "$(msg hi)" -H 'Connection: close'
grep -qi '^Connection: close' "$T/cc.hdr" && ok "Connection: close honoured" || bad "Connection: close"

# ---- concurrency: 300 parallel requests with latency_ms=200 -------------
admin config POST '{"latency_ms":200}' >/dev/null
admin reset POST >/dev/null
cat >"$T/conc.py" <<'EOF'
import http.client, json, sys, time
from concurrent.futures import ThreadPoolExecutor
port, n = int(sys.argv[1]), 300
def one(i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "c%d" % i}]})
        c.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer k"})
        r = c.getresponse(); d = json.loads(r.read())
        return r.status == 200 and d["choices"][0]["message"]["content"] == "echo: c%d" % i
    except Exception as e:
        return repr(e)
    finally:
        c.close()
t = time.time()
with ThreadPoolExecutor(n) as ex:
    res = list(ex.map(one, range(n)))
el = time.time() - t
good = sum(1 for r in res if r is True)
print("%d/%d ok in %.2fs" % (good, n, el), [r for r in res if r is not True][:3])
sys.exit(0 if good == n and 0.2 <= el < 10 else 1)
EOF
OUT=$(python3 "$T/conc.py" "$PORT" 2>&1) && ok "concurrency: $OUT" || bad "concurrency: $OUT"
admin stats GET >/dev/null
expect_py "stats after concurrency" "$T/stats.body" "d['requests']==300 and d['by_status']=={'200':300} and d['duplicates']==0"
admin config POST '{"latency_ms":0}' >/dev/null

# ---- robustness and shutdown --------------------------------------------
printf 'GARBAGE\r\n\r\n' | curl -sS --max-time 2 telnet://127.0.0.1:$PORT >/dev/null 2>&1
expect_eq "survives garbage request line" "$(curl -sS "$B/health")" "ok"
oa sd "$(msg '[[fault:hang]] at shutdown')" --max-time 5 &
SDPID=$!
wait_hanging
S=$(now_ms)
kill -TERM "$SPID"
for _ in $(seq 1 60); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$SPID" 2>/dev/null; then bad "SIGTERM: server still running after 3 s"; else
  wait "$SPID"; RCS=$?
  E=$(( $(now_ms) - S ))
  expect_eq "SIGTERM exits 0 (in ${E} ms, with a hanging request)" "$RCS" "0"
fi
wait "$SDPID"
SPID=""
if [ -s "$T/server.err" ]; then bad "server stderr not empty:"; sed 's/^/     | /' "$T/server.err" | head; else ok "server stderr quiet"; fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
