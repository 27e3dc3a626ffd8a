#!/usr/bin/env python3
"""Charts fan-out latency against offered load from confab-bench JSON.

Usage:
    python3 crates/bench/plot.py FANOUT.json [MORE.json ...] -o crates/bench/fanout-latency

Reads the files written by `confab-bench fanout --sweep --json-out FILE`
(one or more targets each) and writes FILE.png and FILE.svg with two panels:
left, delivery latency p50 and p99 (log scale) against offered deliveries
per second; right, server CPU microseconds per delivery against the same
(steps where the server saturated are hollow: their deliveries finished
after the CPU window, so the figure flatters them). Each target (confab,
ceiling, node-ws) is one colour.

Needs matplotlib (`pip install matplotlib`); nothing else.
"""

import argparse
import json
import sys

COLOURS = {"confab": "#1f77b4", "ceiling": "#2ca02c", "node-ws": "#d62728"}


def load(paths):
    """Yields (label, members, steps) for every target in every file."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("workload") != "fanout":
            sys.exit(f"{path}: not a fanout result (workload={data.get('workload')!r})")
        for result in data["results"]:
            yield result["target"], result["members"], result["steps"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="fanout JSON files from --json-out")
    parser.add_argument("-o", "--output", required=True, help="output path without extension")
    parser.add_argument("--goal-ms", type=float, default=5.0, help="p99 goal line (ms)")
    parser.add_argument("--limit-ms", type=float, default=50.0, help="sustained-rate p99 limit (ms)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, cost) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target, members, steps in load(args.inputs):
        colour = COLOURS.get(target, None)
        offered = [s["rate"] * members for s in steps]
        p50 = [max(s["delivery"]["p50_ms"], 1e-3) for s in steps]
        p99 = [max(s["delivery"]["p99_ms"], 1e-3) for s in steps]
        latency.plot(offered, p99, "o-", color=colour, label=f"{target} p99")
        latency.plot(offered, p50, "o--", color=colour, alpha=0.6, label=f"{target} p50")
        per_delivery = [s.get("server_cpu_us_per_delivery") for s in steps]
        if all(c is not None for c in per_delivery):
            cost.plot(offered, per_delivery, "-", color=colour, label=target)
            for s, x, c in zip(steps, offered, per_delivery):
                hollow = s["delivery"]["p99_ms"] > 10 * args.limit_ms
                cost.plot([x], [c], "o", color=colour, markerfacecolor="white" if hollow else colour)
        for s, x, y in zip(steps, offered, p99):
            if s["drops"] or s["send_errors"] or s["unanswered"]:
                latency.annotate("loss", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)

    latency.axhline(args.goal_ms, color="grey", linestyle=":", label=f"goal p99 {args.goal_ms:g} ms")
    latency.axhline(args.limit_ms, color="black", linestyle=":", label=f"sustained limit {args.limit_ms:g} ms")
    latency.set_yscale("log")
    latency.set_xlabel("offered deliveries/s (publishes/s x members)")
    latency.set_ylabel("publish to deliver latency, ms (from intended send time)")
    latency.set_title("Fan-out latency vs load")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=8)

    cost.set_xlabel("offered deliveries/s")
    cost.set_ylabel("server CPU per delivery, microseconds")
    cost.set_title("Server cost per delivery (one pinned core)")
    cost.set_ylim(bottom=0)
    cost.grid(True, alpha=0.3)
    cost.legend(fontsize=8)

    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(f"{args.output}.{ext}", dpi=110)
        print(f"wrote {args.output}.{ext}")


if __name__ == "__main__":
    main()
