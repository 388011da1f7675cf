# Lists C functions longer than MAX lines (signature to closing brace), one
# "file:line name length allowed|over" line each. A longer function is
# "allowed" when the comment in the 12 lines above its signature says why
# with "(long: <reason>)". Functions are recognised by the layout
# .clang-format gives (Linux braces): the signature starts in column 0 and the
# body closes with "}" in column 0.
# Usage: awk -v MAX=80 -f tests/fnlen.awk FILE...
FNR == 1 { start = 0; depth = 0; incomment = 0 }
{
    hist[FNR] = $0
    code = $0
    # drop comments, then string and character literals, before counting braces
    if (incomment) {
        if (sub(/^.*\*\//, "", code)) incomment = 0; else code = ""
    }
    gsub(/\/\*([^*]|\*[^\/])*\*\//, "", code)
    if (sub(/\/\*.*$/, "", code)) incomment = 1
    sub(/\/\/.*$/, "", code)
    gsub(/\\./, "", code)
    gsub(/"[^"]*"/, "\"\"", code)
    gsub(/'[^']*'/, "''", code)
}
depth == 0 && start == 0 && code ~ /^[A-Za-z_][^=]*\(/ && code !~ /;[[:space:]]*$/ && code !~ /^(typedef|enum|struct [A-Za-z_]+ \{)/ {
    start = FNR
    sig = code
    sub(/^__attribute__\(\([^()]*(\([^()]*\))?[^()]*\)\)[[:space:]]*/, "", sig)
    sub(/\(.*/, "", sig)
    n = split(sig, parts, /[ *]+/)
    name = parts[n]
    why = 0
    for (i = FNR - 12; i < FNR; i++)
        if (i > 0 && index(hist[i], "(long: ") > 0) why = 1
}
start > 0 {
    opens = gsub(/\{/, "{", code)
    closes = gsub(/\}/, "}", code)
    if (depth == 0 && opens == 0 && code ~ /;[[:space:]]*$/) {
        start = 0 # a prototype over several lines
        next
    }
    depth += opens - closes
    if (depth == 0 && opens + closes > 0 && $0 ~ /^\}/) {
        len = FNR - start + 1
        if (len > MAX)
            printf "%s:%d %s %d %s\n", FILENAME, start, name, len, why ? "allowed" : "over"
        start = 0
    }
}
