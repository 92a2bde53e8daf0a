#!/usr/bin/env python3
"""Markdown tables of scripts/bench-browser.sh's rows: the page's draft decode against native.

    scripts/browser-bench-table.py rounds RESULTS.jsonl TOKENS   (the --rounds mode's rows)
    scripts/browser-bench-table.py pairs PAIRS.jsonl TOKENS      (the --pairs mode's rows)

Both end with one line per thread count: the page ÷ native ratios against the goal (≥ 0.5 ×).
"""
import json
import statistics
import sys

GOAL = 0.5


def ratio_line(threads, ratios, median=False, unit=""):
    """Page ÷ native for one thread count: (the median,) the range, how many meet the goal."""
    met = sum(x >= GOAL for x in ratios)
    mid = f"median {statistics.median(ratios):.2f} ×, " if median else ""
    return (f"Page ÷ native, {threads} thread{'s' if threads > 1 else ''}: {mid}"
            f"{min(ratios):.2f}-{max(ratios):.2f} ×, at least {GOAL} × in {met} of {len(ratios)}{unit}.")


def pairs(lines, tokens):
    """One row per pair (page, then native, seconds apart) and each thread count's median."""
    rows = [r for r in lines if not r.get("warmup")]
    first = ", ".join(f"{r['page_tok_s']:.1f} tok/s on {r['threads']}" for r in lines if r.get("warmup"))
    out = [f"Draft decode over {tokens} tokens, tok/s; page and native alternating, one pair per line",
           f"(the page's first generation after loading, not counted: {first}).", "",
           "| threads | pair | page | native | page ÷ native |", "|---|---|---|---|---|"]
    out += [f"| {r['threads']} | {r['pair'] + 1} | {r['page_tok_s']:.1f} | {r['native_tok_s']:.1f} | {r['ratio']:.2f} × |"
            for r in rows]
    out.append("")
    for threads in sorted({r["threads"] for r in rows}, reverse=True):
        ratios = [r["ratio"] for r in rows if r["threads"] == threads]
        out.append(ratio_line(threads, ratios, median=True, unit=" pairs"))
    return out


def rounds(rows, tokens):
    """One row per round and thread count: native, the page cold / warm, memory after load."""
    numbers = sorted({r["round"] for r in rows})

    def native(rnd, threads):
        return next(r["row"]["draft_tok_s"] for r in rows
                    if r["who"] == "native" and r["round"] == rnd and r["threads"] == threads)

    def page(rnd, threads, run):
        return next(r["row"] for r in rows if r["who"] == "page" and r["round"] == rnd
                    and r["row"]["asked_threads"] == str(threads) and r["row"]["run"] == run)

    out = [f"Draft decode over {tokens} tokens, tok/s; the page cold / warm; {len(numbers)} rounds.", "",
           "| round | threads | native | page | page ÷ native | page ready, warm | memory ÷ file |",
           "|---|---|---|---|---|---|---|"]
    ratios = {1: [], 2: []}
    for rnd in numbers:
        for threads in (2, 1):
            n = native(rnd, threads)
            cold, warm = page(rnd, threads, "cold"), page(rnd, threads, "warm")
            c, w = cold["draft_alone"]["decode_tok_s"], warm["draft_alone"]["decode_tok_s"]
            ratios[threads] += [c / n, w / n]
            out.append(f"| {rnd} | {threads} | {n:.1f} | {c:.1f} / {w:.1f} | {c / n:.2f} / {w / n:.2f} × "
                       f"| {warm['ready_ms'] / 1000:.1f} s | {warm['memory_over_file']:.3f} × |")
    out.append("")
    out += [ratio_line(threads, ratios[threads]) for threads in (2, 1)]
    return out


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("rounds", "pairs"):
        sys.exit(__doc__)
    mode, path, tokens = sys.argv[1:]
    lines = [json.loads(line) for line in open(path) if line.strip()]
    print("\n".join((pairs if mode == "pairs" else rounds)(lines, tokens)))


if __name__ == "__main__":
    main()
