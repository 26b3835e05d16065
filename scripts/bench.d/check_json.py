#!/usr/bin/env python3
"""Checks that a `scripts/bench` JSON file is well formed: every figure present and a finite
number, and each target figure beside its target with `met` consistent with both. No timing
assertions: the test suite uses this as a smoke check only."""
import json
import math
import sys

REQUIRED = {
    "ceiling": ["rows", "seconds", "rows_per_s"],
    "ceiling_3": ["rows_per_region", "seconds", "rows_per_s"],
    "kc_peer": ["events", "seconds", "events_per_s", "backlog_events", "transactions", "rows_in_table"],
    "kc_daemon": ["events", "events_per_s", "seconds", "mean_batch_events"],
    "naive": ["events", "seconds", "events_per_s"],
    "catchup_1": ["events", "events_per_s", "seconds", "mean_batch_events", "cpu_us_per_event_region", "cpu_s_per_1000_events", "peak_rss_mb"],
    "catchup_3": ["total_events_per_s", "min_region_events_per_s", "cpu_us_per_event_region", "peak_rss_mb"],
    "reapply_3": ["total_events_per_s", "min_region_events_per_s", "cpu_us_per_event_region"],
    "steady_3": ["rate", "sent", "cpu_us_per_event_region", "peak_rss_mb"],
    "steady_3_verify": ["rate", "sent", "cpu_us_per_event_region", "verify_runs"],
    "verify": ["rows_per_region", "seconds_clean", "seconds_10_diffs", "naive_seconds_clean", "naive_seconds_10_diffs",
               "speedup_clean", "speedup_10_diffs", "divergences_reported"],
}

TARGETS = ["catchup_1_vs_copy", "catchup_3_vs_three_copies", "catchup_vs_kc_peer", "steady_p99_ms",
           "steady_cpu_us_per_event_region", "peak_rss_3r_mb"]
RESOLVE = ["catchup_1_vs_copy", "catchup_vs_kc_peer"]

# `scripts/bench --capture` (capture.py): its own sections and targets.
CAPTURE_REQUIRED = {
    "catchup_1": ["events", "events_per_s", "seconds"],
    "capture_live_single": ["rows", "writer_rows_per_s", "events_per_s", "lag_after_last_commit_s"],
    "capture_live_batches": ["rows", "writer_rows_per_s", "events_per_s", "lag_after_last_commit_s"],
    "capture_backlog": ["rows", "seconds", "events_per_s"],
}

# `scripts/bench --fresh` (fresh.py): its own sections and target.
FRESH_REQUIRED = {
    "alone": ["events_per_s", "cpu_us_per_event_region"],
    "with_fresh": ["events_per_s", "cpu_us_per_event_region", "achieved_requests_per_s", "generator_cpu_s"],
}


def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def main(path):
    with open(path) as f:
        r = json.load(f)
    problems = []
    if r.get("mode") == "tail":
        return report(path, problems + tail_problems(r))
    if r.get("mode") == "capture":
        return report(path, problems + capture_problems(r))
    if r.get("mode") == "fresh":
        return report(path, problems + fresh_problems(r))
    for section, keys in REQUIRED.items():
        for k in keys:
            if not number(r.get(section, {}).get(k)):
                problems.append(f"{section}.{k} is not a number: {r.get(section, {}).get(k)!r}")
    for steady in ("steady_3", "steady_3_verify"):
        for q in ("p50", "p99"):
            if not number(r.get(steady, {}).get("daemon_histogram_ms", {}).get(q)):
                problems.append(f"{steady}.daemon_histogram_ms.{q} missing")
        for q in ("p50", "p99", "max"):
            if not number(r.get(steady, {}).get("stamped_ms", {}).get(q)):
                problems.append(f"{steady}.stamped_ms.{q} missing")
    v = r.get("verify", {})
    if v.get("exit_clean") != 0 or v.get("exit_10_diffs") != 2:
        problems.append(f"verify exit codes: {v.get('exit_clean')!r} with 0 differences (want 0), "
                        f"{v.get('exit_10_diffs')!r} with 10 (want 2)")
    for section in ("catchup_3", "reapply_3"):
        if len(r.get(section, {}).get("per_region", {})) != 3:
            problems.append(f"{section}.per_region does not have 3 regions")
    for block, keys in (("targets", TARGETS), ("resolve", RESOLVE)):
        got = r.get(block)
        if not isinstance(got, dict) or set(got) != set(keys):
            problems.append(f"{block} should have exactly {sorted(keys)}, has {sorted(got or {})}")
            continue
        for k, t in got.items():
            if not (number(t.get("value")) and number(t.get("target")) and isinstance(t.get("met"), bool)
                    and isinstance(t.get("unit"), str) and t.get("comparison") in ("≥", "≤")):
                problems.append(f"{block}.{k} is not {{value, target, unit, comparison, met}}: {t!r}")
            elif t["met"] != (t["value"] >= t["target"] if t["comparison"] == "≥" else t["value"] <= t["target"]):
                problems.append(f"{block}.{k}.met disagrees with its value and target: {t!r}")
    if not number(r.get("targets", {}).get("steady_p99_ms", {}).get("broker_floor_p99_ms")):
        problems.append("targets.steady_p99_ms.broker_floor_p99_ms missing")
    if not number(r.get("targets", {}).get("peak_rss_3r_mb", {}).get("events_drained")):
        problems.append("targets.peak_rss_3r_mb.events_drained missing")
    conns = r.get("parameters", {}).get("connections", "absent")
    if conns is not None and not (isinstance(conns, int) and conns > 0):
        problems.append(f"parameters.connections is neither null nor a positive integer: {conns!r}")
    if not isinstance(r.get("table"), list) or not r["table"]:
        problems.append("table missing")
    return report(path, problems)


def target_problems(block, got, keys):
    problems = []
    if not isinstance(got, dict) or set(got) != set(keys):
        return [f"{block} should have exactly {sorted(keys)}, has {sorted(got or {})}"]
    for k, t in got.items():
        if not (number(t.get("value")) and number(t.get("target")) and isinstance(t.get("met"), bool)
                and isinstance(t.get("unit"), str) and t.get("comparison") in ("≥", "≤")):
            problems.append(f"{block}.{k} is not {{value, target, unit, comparison, met}}: {t!r}")
        elif t["met"] != (t["value"] >= t["target"] if t["comparison"] == "≥" else t["value"] <= t["target"]):
            problems.append(f"{block}.{k}.met disagrees with its value and target: {t!r}")
    return problems


def tail_problems(r):
    """`scripts/bench --tail` (tail.py): each variant's latency figures and its per-second series."""
    problems = []
    for name in ("as-is", "async-commit", "small-tables"):
        v = r.get("variants", {}).get(name)
        if not isinstance(v, dict):
            problems.append(f"variants.{name} missing")
            continue
        for block, keys in (("stamped_ms", ("p50", "p99", "max")), ("daemon_histogram_ms", ("p50", "p99")),
                            ("batch_duration_ms", ("p50", "p99"))):
            for q in keys:
                if not number(v.get(block, {}).get(q)):
                    problems.append(f"variants.{name}.{block}.{q} missing")
        if not isinstance(v.get("per_second"), list) or not any(p.get("rows") for p in v["per_second"]) \
                or any(len(p.get("regions", [])) != 3 for p in v["per_second"]):
            problems.append(f"variants.{name}.per_second has no rows")
    problems += target_problems("targets", r.get("targets"), ["steady_p99_ms"])
    if not isinstance(r.get("table"), list) or not r["table"]:
        problems.append("table missing")
    return problems


def capture_problems(r):
    problems = []
    for section, keys in CAPTURE_REQUIRED.items():
        for k in keys:
            if not number(r.get(section, {}).get(k)):
                problems.append(f"{section}.{k} is not a number: {r.get(section, {}).get(k)!r}")
    lat = r.get("capture_latency")
    if not isinstance(lat, list) or not lat:
        problems.append("capture_latency missing")
        lat = []
    for x in lat:
        for q in ("p50", "p99", "max"):
            if not number(x.get("end_to_end_ms", {}).get(q)):
                problems.append(f"capture_latency[{x.get('target_rate')!r}].end_to_end_ms.{q} missing")
        if not number(x.get("broker_floor_ms", {}).get("p99")):
            problems.append(f"capture_latency[{x.get('target_rate')!r}].broker_floor_ms.p99 missing")
    keys = ["capture_vs_apply_1"] + [f"capture_p99_ms_{x.get('target_rate')}" for x in lat]
    problems += target_problems("targets", r.get("targets"), keys)
    if r.get("resolve") != {}:
        problems.append(f"resolve should be empty in capture mode: {r.get('resolve')!r}")
    if not isinstance(r.get("table"), list) or not r["table"]:
        problems.append("table missing")
    return problems


def fresh_problems(r):
    problems = []
    for section, keys in FRESH_REQUIRED.items():
        for k in keys:
            if not number(r.get(section, {}).get(k)):
                problems.append(f"{section}.{k} is not a number: {r.get(section, {}).get(k)!r}")
    counts = r.get("with_fresh", {}).get("status_counts")
    if not isinstance(counts, dict) or not counts or not all(isinstance(v, int) and v >= 0 for v in counts.values()):
        problems.append(f"with_fresh.status_counts is not a non-empty map of counts: {counts!r}")
    runs = r.get("runs")
    if not isinstance(runs, list) or not any(x.get("with_fresh") for x in runs) or all(x.get("with_fresh") for x in runs):
        problems.append("runs should hold catch-ups both alone and with /fresh")
    else:
        for x in runs:
            for k in ("events", "events_per_s", "seconds", "cpu_us_per_event_region"):
                if not number(x.get(k)):
                    problems.append(f"runs[{x.get('name')!r}].{k} is not a number: {x.get(k)!r}")
            if x.get("with_fresh") and not number(x.get("fresh", {}).get("achieved_per_s")):
                problems.append(f"runs[{x.get('name')!r}].fresh.achieved_per_s missing")
    problems += target_problems("targets", r.get("targets"), ["fresh_vs_alone"])
    if r.get("resolve") != {}:
        problems.append(f"resolve should be empty in fresh mode: {r.get('resolve')!r}")
    if not isinstance(r.get("table"), list) or not r["table"]:
        problems.append("table missing")
    return problems


def report(path, problems):
    if problems:
        print(f"{path}: malformed benchmark results:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"{path}: well-formed benchmark results")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
