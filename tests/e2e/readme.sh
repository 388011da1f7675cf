# README.md holds: each lua block loads as a workflow (syntax and keys
# checked, offline) and each command it names is one `orch help` lists.
. tests/lib.sh
"$ORCH" help >"$WORK/help.txt" 2>&1
out=$("$ORCH" lua tests/readme_check.lua README.md "$WORK/help.txt" "$WORK" 2>&1)
rc=$?
echo "$out"
expect_eq "README's lua blocks load and its commands exist" "$rc" 0
# the checker itself catches a bad block and an unknown command
printf '# t\n```lua\nreturn orch.workflow { name = "x", input = {}, stagez = {} }\n```\nrun `orch frobnicate`\n' >"$WORK/bad.md"
out=$("$ORCH" lua tests/readme_check.lua "$WORK/bad.md" "$WORK/help.txt" "$WORK" 2>&1)
echo "$out" >"$WORK/bad.out"
expect_grep "a misspelled key in a block is caught, with its README line" "README.md:3: the lua block does not load: .*unknown key 'stagez'" "$WORK/bad.out"
expect_grep "an unknown command is caught" "orch frobnicate., which .orch help. does not list" "$WORK/bad.out"
# and a CLI section that drifted from `orch help`
mkdir -p "$WORK/drift"
sed 's/      list runs, newest first/      list runs/' README.md >"$WORK/drift/README.md"
"$ORCH" lua tests/readme_check.lua "$WORK/drift/README.md" "$WORK/help.txt" "$WORK" >"$WORK/drift.out" 2>&1
expect_grep "a CLI section that is not orch help is caught" "CLI block is not .orch help. word for word" "$WORK/drift.out"
finish
