#!/usr/bin/env python3
"""`make bench` (scripts/bench.sh): collect rows, write report.md and report.json.

  bench_report.py add ROWS.jsonl key=value ...   append one measured row
  bench_report.py render ROWS.jsonl OUTDIR key=value ...   write the report

A row: row (the issue's row), case (what exactly), kleidia and raw (numbers or
empty), unit, better (higher|lower), goal (text), goal_ratio (Kleidia / raw
wanted at least, in the "better" direction) or goal_max (Kleidia's figure at
most), p99_ms and goal_p99 (a latency bound next to the ratio), note. The ratio is Kleidia relative to the raw engine, 1.0 = as good
(kleidia/raw for higher-is-better, raw/kleidia for lower-is-better).
Measures nothing and asserts nothing: the verdict column only compares.
"""
import json
import sys

NUMERIC = {"kleidia", "raw", "goal_ratio", "goal_max", "p99_ms", "goal_p99"}


def parse(kv):
    row = {}
    for a in kv:
        k, _, v = a.partition("=")
        if k in NUMERIC:
            try:
                row[k] = float(v) if v not in ("", "-") else None
            except ValueError:
                row[k] = None
        else:
            row[k] = v
    return row


def ratio(r):
    k, raw = r.get("kleidia"), r.get("raw")
    if k is None or raw is None or k == 0 or raw == 0:
        return None
    return k / raw if r.get("better", "higher") == "higher" else raw / k


def verdict(r):
    if r.get("kleidia") is None:
        return "not measured"
    if r.get("goal_ratio") is not None:
        x = ratio(r)
        if x is None:
            return "—"
        v = "meets" if x >= r["goal_ratio"] else "misses"
        if r.get("goal_p99") is not None and r.get("p99_ms") is not None:
            v += " ratio, " + ("meets" if r["p99_ms"] <= r["goal_p99"] else "misses") + " p99"
        return v
    if r.get("goal_max") is not None:
        return "meets" if r["kleidia"] <= r["goal_max"] else "misses"
    return "measured"


def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def render(rows_file, outdir, meta):
    rows = [json.loads(line) for line in open(rows_file) if line.strip()]
    for r in rows:
        r["ratio"] = ratio(r)
        r["verdict"] = verdict(r)
    with open(f"{outdir}/report.json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
        f.write("\n")
    lines = [
        f"# Kleidia bench — {meta.get('date', '')}",
        "",
        f"Machine: {meta.get('machine', '')}. {meta.get('setup', '')}",
        "",
        "| Row | Case | Kleidia | Raw engine | Ratio | Goal | Verdict | Note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = r.get("unit", "")
        k = f"{fmt(r.get('kleidia'))} {unit}".strip() if r.get("kleidia") is not None else "—"
        raw = f"{fmt(r.get('raw'))} {unit}".strip() if r.get("raw") is not None else "—"
        x = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        lines.append(
            f"| {r.get('row', '')} | {r.get('case', '')} | {k} | {raw} | {x} | "
            f"{r.get('goal', '')} | {r['verdict']} | {r.get('note', '')} |"
        )
    notes = meta.get("notes_file")
    if notes:
        try:
            extra = open(notes).read().strip()
        except OSError:
            extra = ""
        if extra:
            lines += ["", extra]
    with open(f"{outdir}/report.md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "add":
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps(parse(sys.argv[3:])) + "\n")
    elif len(sys.argv) >= 4 and sys.argv[1] == "render":
        render(sys.argv[2], sys.argv[3], parse(sys.argv[4:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
