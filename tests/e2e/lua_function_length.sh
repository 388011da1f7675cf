# No Lua function in lua/orch/ is longer than 80 lines but those listed in
# tests/function_length_allow.txt with why (tests/lua_function_length.lua
# measures them from the compiled bytecode); the checker itself catches an
# 81-line function, a nested one, and an allow-list line without a reason.
. tests/lib.sh
check() { # check OUT ARGS...: runs the checker, sets RC
  local out=$1; shift
  "$ORCH" lua "$ROOT/tests/lua_function_length.lua" "$@" >"$out" 2>&1
  RC=$?
}

# the checker on made-up files
body() { for _ in $(seq 1 "$1"); do echo "  x = x + 1"; done; }
{ echo "local x = 0"; echo "local function ok80()"; body 78; echo "end"; } >"$WORK/short.lua"
{ echo "local M, x = {}, 0"; echo "function M.long()"; body 79; echo "end"
  echo "M.outer = function()"; echo "  local s = [[function fake() end]]"; echo "  local function inner()"; body 79
  echo "  end"; echo "  return inner"; echo "end"; echo "return M"; } >"$WORK/long.lua"
check "$WORK/c1.log" "$WORK/short.lua"
expect_eq "an 80-line function passes" "$RC" 0
check "$WORK/c2.log" "$WORK/long.lua"
expect_eq "an 81-line function fails" "$RC" 1
expect_grep "and is named with its lines" "^too long $WORK/long.lua:M.long: 81 lines \(2-82\)" "$WORK/c2.log"
expect_grep "a nested one is named inside the one that holds it" "^too long $WORK/long.lua:M.outer/inner: 81 lines \(85-165\)" "$WORK/c2.log"
expect_grep "a function that is long only by holding one is counted too" "^too long $WORK/long.lua:M.outer: 85 lines \(83-167\)" "$WORK/c2.log"
if grep -q fake "$WORK/c2.log"; then bad "a function inside a string was counted"; else ok "a function inside a string is not counted"; fi
printf '%s:M.long  a test of the list\n%s:M.outer  held\n%s:M.outer/inner  held\n' "$WORK/long.lua" "$WORK/long.lua" "$WORK/long.lua" >"$WORK/allow.txt"
echo "$WORK/long.lua:M.gone  renamed since" >>"$WORK/allow.txt"
check "$WORK/c3.log" --allow "$WORK/allow.txt" "$WORK/long.lua"
expect_eq "listed functions pass" "$RC" 0
expect_grep "a stale line is named" "allow.txt:4: $WORK/long.lua:M.gone is no longer over 80 lines" "$WORK/c3.log"
echo "$WORK/long.lua:M.long" >"$WORK/noreason.txt"
check "$WORK/c4.log" --allow "$WORK/noreason.txt" "$WORK/long.lua"
expect_eq "a line without a reason: exit 2" "$RC" 2
expect_grep "says what to write" "noreason.txt:1: .* has no reason: write path:function and why it may be long" "$WORK/c4.log"
echo "local function broken(" >"$WORK/bad.lua"
check "$WORK/c5.log" "$WORK/bad.lua"
expect_eq "a file that does not compile: exit 2" "$RC" 2

# the engine's own modules
check "$WORK/orch.log" --allow tests/function_length_allow.txt $(find lua/orch -name '*.lua' | sort)
expect_eq "lua/orch: no function over 80 lines but the allowed ones" "$RC" 0
sed 's/^/     | /' "$WORK/orch.log"
finish
