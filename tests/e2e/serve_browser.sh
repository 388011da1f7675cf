# The dashboard in a real browser: headless Chromium loads the runs list
# and a run's page from `orch serve` while a 4,000-row run goes on in
# another process. The rendered DOM names the run, its progress changes
# between two loads 3 s apart, and a row error holding <script> shows as
# text (escaped in the DOM, no script element made of it). A screenshot is
# saved (ORCH_SCREENSHOT=FILE keeps a copy, as docs/dashboard.png was made).
. tests/lib.sh
cd "$WORK"
CHROME=${CHROME:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROME" ]; then bad "chromium is not installed (tests/deps.sh installs it)"; finish; exit 1; fi

cat >slow.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 4000 do rows[i] = { id = i, text = "item " .. i } end
return orch.workflow {
  name = "reviews <b>bold</b>",
  input = rows,
  output = orch.write.jsonl("out/slow.jsonl"),
  key = "id",
  concurrency = 20,
  on_error = "skip",
  checkpoint = orch.policy.every_rows(250),
  llm = { provider = "mock", model = "mock", latency_ms = 400 }, -- 80 s: still going when the checks end (SIGINT stops it)
  stages = {
    function(row)
      if row.id % 97 == 0 then error("bad row <script>window.HACKED=1;document.title='HACKED'</script> " .. row.id) end
      return row
    end,
    orch.stage.prompt { name = "tone", template = "Tone of {{text}}, one of: positive, negative", into = "tone" },
  },
}
LUA
"$ORCH" run slow.lua --db s.db >run.log 2>&1 &
RUN_PID=$!
wait_until '[ "$(sqlite3 s.db "select count(*) from runs" 2>/dev/null)" = 1 ]'
"$ORCH" serve --db s.db --listen 127.0.0.1:0 >serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $RUN_PID $SERVE_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
wait_until "grep -q 'orch serve: http' serve.log" || { bad "serve did not start"; cat serve.log; }
PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' serve.log)
URL="http://127.0.0.1:$PORT"
# past the first checkpoint: its failed rows are committed
wait_until '[ "$(sqlite3 s.db "select rows_done from runs")" -ge 250 ] 2>/dev/null'
ID=$(sqlite3 s.db "select id from runs")

# dump URL OUT: the DOM Chromium renders, scripts run (2.5 s of page time)
dump() {
  timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$WORK/chrome" \
    --virtual-time-budget=2500 --dump-dom "$1" >"$2" 2>>chrome.log
}
# text OUT.html SELECTOR-ID: the text of the element with that id
text_of() {
  python3 - "$1" "$2" <<'PY'
import html.parser, sys
class P(html.parser.HTMLParser):
    def __init__(self, want):
        super().__init__(); self.want, self.depth, self.out = want, 0, []
    def handle_starttag(self, tag, attrs):
        if self.depth: self.depth += 1
        elif dict(attrs).get("id") == self.want: self.depth = 1
    def handle_endtag(self, tag):
        if self.depth: self.depth -= 1
    def handle_data(self, d):
        if self.depth: self.out.append(d)
p = P(sys.argv[2]); p.feed(open(sys.argv[1]).read()); print("".join(p.out).strip())
PY
}

dump "$URL/" list.html
expect_grep "the runs list names the run (markup in the name as text)" "<div class=\"run-name\">reviews &lt;b&gt;bold&lt;/b&gt;</div>" list.html
expect_grep "as running" "data-status=\"running\"" list.html

dump "$URL/#/run/$ID" run1.html
sleep 3
dump "$URL/#/run/$ID" run2.html
p1=$(text_of run1.html progress)
p2=$(text_of run2.html progress)
echo "     first load:  $p1"
echo "     second load: $p2"
expect_grep "the run page shows its name" "<span id=\"run-name\">reviews &lt;b&gt;bold&lt;/b&gt;</span>" run1.html
if [ -n "$p1" ] && [ "$p1" != "$p2" ]; then ok "the progress changed between two loads 3 s apart"; else bad "progress [$p1] then [$p2]"; fi
echo "$p1" | grep -Eq "^[0-9,]+ of 4,000 rows [0-9]+% · ETA [0-9]+m[0-9]{2}s · [0-9,]+ rows/s$" && ok "with %, ETA and rows/s" || bad "progress text [$p1]"
expect_grep "a failed row's <script> is text in the page" "<td class=\"err\">slow.lua:[0-9]+: bad row &lt;script&gt;window.HACKED=1;document.title='HACKED'&lt;/script&gt; 97</td>" run2.html
if grep -q "<script>window.HACKED" run2.html; then bad "the error became a script element"; else ok "no script element was made of it"; fi
if grep -q "<title>HACKED" run2.html; then bad "the error's script ran"; else ok "and it did not run"; fi
expect_grep "the page keeps updating while the run goes on" "id=\"live\"[^>]*>live · updated" run2.html
expect_grep "the chart is drawn" "<polyline class=\"rows\" points=\"[0-9]" run2.html

timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$WORK/chrome" \
  --virtual-time-budget=2500 --hide-scrollbars --window-size=1280,1500 --screenshot="$WORK/dashboard.png" \
  "$URL/#/run/$ID" >/dev/null 2>>chrome.log
if [ "$(head -c 8 dashboard.png | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] && [ "$(wc -c <dashboard.png)" -gt 20000 ]; then
  ok "a screenshot PNG was saved ($(wc -c <dashboard.png) bytes)"
else bad "no screenshot"; tail -5 chrome.log; fi
[ -n "${ORCH_SCREENSHOT:-}" ] && cp dashboard.png "$ORCH_SCREENSHOT"

# once the run ends the page says so and stops updating
kill -INT "$RUN_PID"
wait "$RUN_PID"
dump "$URL/#/run/$ID" run3.html
expect_grep "a stopped run's page stops updating" "id=\"live\"[^>]*>finished · not updating" run3.html
finish
