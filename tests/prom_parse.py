#!/usr/bin/env python3
"""A strict parser of the Prometheus text exposition format (0.0.4), for
the tests of `orch serve`'s /metrics and `orch run --metrics FILE`.

    prom_parse.py FILE [--get NAME[{label="v",...}]]...

Exits 1 with the offending line on any departure from the format (a sample
of an undeclared family, a family split in two, HELP/TYPE repeated or
after its samples, a bad name, label or value, a duplicate series, a
histogram whose buckets are not cumulative or whose +Inf bucket is not its
count, a negative counter, no final newline). With --get, prints the sum of
the matching series' values, one line per --get; else "ok N families, M
samples"."""
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Bad(Exception):
    pass


def parse_value(s, where):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s):
        raise Bad("%s: not a number: %r" % (where, s))
    return float(s)


def parse_labels(s, i, where):
    """s[i] == '{'; returns (labels dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s[i] == "}":
            return labels, i + 1
        m = LABEL.match(s, i)
        if not m:
            raise Bad("%s: bad label name at %d" % (where, i))
        name = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise Bad("%s: expected =\" after label %s" % (where, name))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise Bad("%s: unterminated label value" % where)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1]
                if nxt not in '\\"n':
                    raise Bad("%s: bad escape \\%s" % (where, nxt))
                val.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise Bad("%s: raw newline in a label value" % where)
            else:
                val.append(c)
                i += 1
        if name in labels:
            raise Bad("%s: label %s twice" % (where, name))
        labels[name] = "".join(val)
        if s[i] == ",":
            i += 1
        elif s[i] != "}":
            raise Bad("%s: expected , or } after a label" % where)


def family_of(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return None


def parse(text):
    if text and not text.endswith("\n"):
        raise Bad("the text does not end with a newline")
    types, helps, done, samples, seen = {}, set(), set(), [], set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d (%r)" % (n, line)
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise Bad("%s: bad metric name" % where)
                if name in done or (current != name and name in types and parts[1] == "HELP"):
                    raise Bad("%s: family %s continues after another one" % (where, name))
                if parts[1] == "HELP":
                    if name in helps:
                        raise Bad("%s: second HELP for %s" % (where, name))
                    helps.add(name)
                else:
                    if name in types:
                        raise Bad("%s: second TYPE for %s" % (where, name))
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise Bad("%s: unknown type" % where)
                    if any(family_of(s[0], {name: parts[3]}) == name for s in samples):
                        raise Bad("%s: TYPE after the family's samples" % where)
                    types[name] = parts[3]
                if current is not None and current != name:
                    done.add(current)
                current = name
            continue
        m = NAME.match(line)
        if not m:
            raise Bad("%s: bad metric name" % where)
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, where)
        rest = line[i:]
        if not rest.startswith(" "):
            raise Bad("%s: expected a space before the value" % where)
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise Bad("%s: expected a value and an optional timestamp" % where)
        value = parse_value(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise Bad("%s: bad timestamp" % where)
        fam = family_of(name, types)
        if fam is None:
            raise Bad("%s: sample of a family with no TYPE line before it" % where)
        if fam in done:
            raise Bad("%s: family %s continues after another one" % (where, fam))
        if current != fam:
            if current is not None:
                done.add(current)
            current = fam
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise Bad("%s: duplicate series" % where)
        seen.add(key)
        if types[fam] == "counter" and (value < 0 or math.isnan(value)):
            raise Bad("%s: a counter below zero" % where)
        if types[fam] == "histogram" and name == fam:
            raise Bad("%s: a histogram sample must be _bucket, _sum or _count" % where)
        if name.endswith("_bucket") and types[fam] == "histogram" and "le" not in labels:
            raise Bad("%s: a bucket without le" % where)
        samples.append((name, labels, value))
    check_histograms(types, samples)
    return types, samples


def check_histograms(types, samples):
    groups = {}
    for name, labels, value in samples:
        fam = family_of(name, types)
        if types.get(fam) != "histogram":
            continue
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault((fam, rest), {"buckets": [], "count": None, "sum": None})
        if name.endswith("_bucket"):
            g["buckets"].append((parse_value(labels["le"], "le"), value))
        elif name.endswith("_count"):
            g["count"] = value
        else:
            g["sum"] = value
    for (fam, rest), g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            raise Bad("histogram %s%s: no +Inf bucket last" % (fam, dict(rest)))
        if [x for x, _ in b] != sorted(x for x, _ in b):
            raise Bad("histogram %s%s: buckets out of order" % (fam, dict(rest)))
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            raise Bad("histogram %s%s: buckets not cumulative" % (fam, dict(rest)))
        if g["count"] is None or g["sum"] is None or g["count"] != b[-1][1]:
            raise Bad("histogram %s%s: _count missing or not the +Inf bucket" % (fam, dict(rest)))


def get(samples, query):
    m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?", query)
    want = parse_labels(m.group(2), 0, query)[0] if m.group(2) else {}
    total, found = 0.0, False
    for name, labels, value in samples:
        if name == m.group(1) and all(labels.get(k) == v for k, v in want.items()):
            total += value
            found = True
    return total if found else None


def main(argv):
    path, queries = argv[1], []
    i = 2
    while i < len(argv):
        if argv[i] != "--get":
            print("usage: prom_parse.py FILE [--get QUERY]...", file=sys.stderr)
            return 2
        queries.append(argv[i + 1])
        i += 2
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        types, samples = parse(text)
    except Bad as e:
        print("not the exposition format: %s" % e)
        return 1
    if not queries:
        print("ok %d families, %d samples" % (len(types), len(samples)))
    for q in queries:
        v = get(samples, q)
        print("missing" if v is None else ("%d" % v if v == int(v) else repr(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
