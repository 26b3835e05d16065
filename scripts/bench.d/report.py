"""The benchmark's report (for bench.py): the target figures beside their targets, the printed
table with its targets block, and the JSON file."""
import json
import os


def target(label, value, goal, unit, at_least, **extra):
    value = None if value is None else round(value, 3)
    return dict({"figure": label, "value": value, "target": goal, "unit": unit, "comparison": "≥" if at_least else "≤",
                 "met": value is not None and (value >= goal if at_least else value <= goal)}, **extra)


def steady_target(st, batch_delay_ms):
    """The steady p99 (the daemon's histogram) against 2 × the broker's own p99 (a bare consumer
    of the same records) + `apply.max_batch_delay_ms`."""
    floor = st["broker_floor_ms"].get("p99")
    goal = round(2 * floor + batch_delay_ms, 2) if floor is not None else 0.0
    return target(f"steady {st['rate']:,} ev/s → 3 regions, p99 (histogram)", st["daemon_histogram_ms"]["p99"], goal, "ms",
                  False, broker_floor_p99_ms=floor, batch_delay_ms=batch_delay_ms, rate=st["rate"], target_rate=5000)


def targets(r):
    """The figures the project's performance targets are set on, each beside its target, and the
    two criteria the work on them is judged by. Ratios are to ceilings measured in the same run;
    latency, CPU and memory are absolute."""
    ceil, ceil3 = r["ceiling"]["rows_per_s"], r["ceiling_3"]["rows_per_s"]
    c1, c3, st = r["catchup_1"], r["catchup_3"], r["steady_3"]
    kc, kcd = r["kc_peer"], r["kc_daemon"]
    vs_copy = c1["events_per_s"] / ceil if ceil else None
    vs_kc = kcd["events_per_s"] / kc["events_per_s"] if kc["events_per_s"] else None
    n = r["parameters"]["events"]
    t = {
        "catchup_1_vs_copy": target("catch-up, 1 region", vs_copy, 0.8, "× COPY", True),
        "catchup_3_vs_three_copies": target("catch-up, 3 regions, total", c3["total_events_per_s"] / ceil3 if ceil3 else None,
                                            0.8, "× three concurrent COPYs", True),
        "catchup_vs_kc_peer": target("catch-up vs KC-style peer", vs_kc, 2.0, "× KC-style peer", True,
                                     backlog_events=kc["backlog_events"]),
        "steady_p99_ms": steady_target(st, r["parameters"].get("batch_delay_ms", 20)),
        "steady_cpu_us_per_event_region": target("CPU per event per region, steady state",
                                                 st["cpu_us_per_event_region"], 5.0, "µs", False),
        "peak_rss_3r_mb": target(f"peak RSS draining {n:,} into 3 regions", c3["peak_rss_mb"], 100.0, "MB", False,
                                 events_drained=n, target_events=1_000_000),
    }
    resolve = {
        "catchup_1_vs_copy": target("catch-up, 1 region", vs_copy, 0.645, "× COPY (1.5 × 0.43)", True),
        "catchup_vs_kc_peer": target("catch-up vs KC-style peer", vs_kc, 1.0, "× KC-style peer", True),
    }
    return t, resolve


def targets_block(r):
    def line(t):
        v = "—" if t["value"] is None else f"{t['value']:,.2f}"
        extra = ""
        if "batch_delay_ms" in t:
            extra = f"   (2 × broker floor p99 {t['broker_floor_p99_ms'] or 0:.1f} ms + {t['batch_delay_ms']} ms batch delay)"
            if t.get("rate", t.get("target_rate")) != t.get("target_rate"):
                extra += f" (the target is set for {t['target_rate']:,} ev/s)"
        elif "broker_floor_p99_ms" in t:
            extra = f"   (broker floor p99 {t['broker_floor_p99_ms'] or 0:.1f} ms)"
            if t["rate"] != t["target_rate"]:
                extra += f" (the target is set for {t['target_rate']:,} ev/s)"
        if t.get("events_drained", 1_000_000) != 1_000_000:
            extra = "   (the target is set for 1,000,000)"
        if t.get("backlog_events") is not None:
            extra = f"   ({t['backlog_events']:,}-event backlog)"
        return (f"  {'met ' if t['met'] else 'MISS'}  {t['figure']:46} {v:>9} {t['comparison']} {t['target']:g} "
                f"{t['unit']}{extra}")

    lines = ["", "targets (value, target; ratios to ceilings of this run)"]
    lines += [line(t) for t in r["targets"].values()]
    if r["resolve"]:
        lines += ["resolve criteria"]
        lines += [line(t) for t in r["resolve"].values()]
    return lines


def table(r):
    ceil = r["ceiling"]["rows_per_s"]
    naive = r["naive"]["events_per_s"]

    def ratios(x):
        return f"{x / ceil:6.2f} × ceiling  {x / naive:7.1f} × naive" if ceil and naive else ""

    c1, c3, ra, st = r["catchup_1"], r["catchup_3"], r["reapply_3"], r["steady_3"]
    kc, kcd = r["kc_peer"], r["kc_daemon"]
    conns = r["parameters"].get("connections")
    lines = [
        f"region-replicator benchmark — {r['parameters']['events']} events, {r['parameters']['partitions']} partitions, "
        f"batches of ≤ {r['parameters']['batch_events']}, "
        f"{'apply.connections ' + str(conns) + ', ' if conns is not None else ''}{r['machine']['cores']} cores, load {' '.join(r['machine']['uptime_load'])}",
        "",
        f"{'measure':44} {'value':>14}   ratios",
        f"{'ceiling: COPY text, same rows (rows/s)':44} {ceil:14,.0f}",
        f"{'ceiling: 3 concurrent COPYs (rows/s)':44} {r['ceiling_3']['rows_per_s']:14,.0f}   one per region server",
        f"{'naive replicator: INSERT per event (ev/s)':44} {naive:14,.0f}",
        f"{'KC-style peer, an emulation (ev/s)':44} {kc['events_per_s']:14,.0f}   "
        f"Kafka Connect JDBC sink upsert, 3,000 rows/txn; {kc['backlog_events']:,}-event backlog, 1 region",
        f"{'catch-up, 1 region, the peer' + chr(39) + 's backlog (ev/s)':44} {kcd['events_per_s']:14,.0f}   "
        f"{kcd['events_per_s'] / max(kc['events_per_s'], 1e-9):.2f} × KC-style peer "
        f"{kcd['events_per_s'] / max(naive, 1e-9):6.1f} × naive, batches of {kcd['mean_batch_events'] or 0:,.0f} mean",
        f"{'catch-up, 1 region (ev/s)':44} {c1['events_per_s']:14,.0f}   {ratios(c1['events_per_s'])}",
        f"{'catch-up, 3 regions, slowest region (ev/s)':44} {c3['min_region_events_per_s']:14,.0f}   {ratios(c3['min_region_events_per_s'])}",
        f"{'catch-up, 3 regions, total (ev/s)':44} {c3['total_events_per_s']:14,.0f}   "
        f"{c3['total_events_per_s'] / max(r['ceiling_3']['rows_per_s'], 1e-9):.2f} × 3 concurrent COPYs",
        f"{'re-apply, 3 regions, slowest region (ev/s)':44} {ra['min_region_events_per_s']:14,.0f}   "
        f"{ra['min_region_events_per_s'] / max(c3['min_region_events_per_s'], 1e-9):.2f} × first apply",
        f"{'re-apply, 3 regions, total (ev/s)':44} {ra['total_events_per_s']:14,.0f}",
        f"{'steady ' + str(st['rate']) + ' ev/s → 3 regions: p50/p99 (histogram, ms)':44} "
        f"{st['daemon_histogram_ms']['p50']:6.1f} /{st['daemon_histogram_ms']['p99']:6.1f}",
        f"{'  p50/p99/max (stamped rows, ms)':44} {st['stamped_ms']['p50'] or 0:6.1f} /{st['stamped_ms']['p99'] or 0:6.1f}"
        f" /{st['stamped_ms']['max'] or 0:7.1f}",
        f"{'  p50/p99/max (bare consumer: broker floor, ms)':44} {st['broker_floor_ms'].get('p50') or 0:6.1f} /"
        f"{st['broker_floor_ms'].get('p99') or 0:6.1f} /{st['broker_floor_ms'].get('max') or 0:7.1f}",
        f"{'CPU µs per event per region: 1r / 3r / steady':44} {c1['cpu_us_per_event_region']:6.2f} /"
        f"{c3['cpu_us_per_event_region']:6.2f} /{st['cpu_us_per_event_region']:6.2f}",
        f"{'CPU s per 1,000 events: 1r / 3r':44} {c1['cpu_s_per_1000_events']:6.4f} /{c3['cpu_s_per_1000_events']:7.4f}",
        f"{'peak RSS draining, MB: 1r / 3r':44} {c1['peak_rss_mb']:6.1f} /{c3['peak_rss_mb']:6.1f}",
    ]
    sv, v = r["steady_3_verify"], r["verify"]
    lines += [
        f"{'steady + verify looping: p99 hist / stamped (ms)':44} {sv['daemon_histogram_ms']['p99']:6.1f} /"
        f"{sv['stamped_ms']['p99'] or 0:6.1f}   alone: {st['daemon_histogram_ms']['p99']:.1f} / {st['stamped_ms']['p99'] or 0:.1f}"
        f" ({sv.get('verify_runs', 0)} verify runs)",
        f"{'verify ' + format(v['rows_per_region'], ',') + ' rows × 3, 0 diffs (s)':44} {v['seconds_clean']:14.2f}   "
        f"naive {v['naive_seconds_clean']:.2f} s = {v['speedup_clean']:.1f} × slower",
        f"{'verify, 10 scattered diffs (s)':44} {v['seconds_10_diffs']:14.2f}   "
        f"naive {v['naive_seconds_10_diffs']:.2f} s = {v['speedup_10_diffs']:.1f} × slower; "
        f"{v['divergences_reported']} divergences named",
    ]
    return "\n".join(lines + targets_block(r))


def write(results, path):
    """Adds the targets and the table to `results`, writes them as JSON to `path` and prints
    the table."""
    if results.get("mode") == "batch_sizes":  # scripts/bench --batch-sizes (sizes.py)
        from sizes import sizes_table
        results["targets"], results["resolve"] = {}, {}
        text = "\n".join(sizes_table(results))
    elif results.get("mode") == "tail":  # scripts/bench --tail (tail.py)
        from tail import tail_table
        v = results["variants"]["as-is"]
        results["targets"] = {"steady_p99_ms": steady_target(v, results["batch_delay_ms"])}
        results["resolve"] = {}
        text = "\n".join(tail_table(results) + targets_block(results))
    elif results.get("mode") == "capture":  # scripts/bench --capture (capture.py)
        from capture import capture_table, capture_targets
        results["targets"], results["resolve"] = capture_targets(results, target), {}
        text = "\n".join(capture_table(results) + targets_block(results))
    elif results.get("mode") == "fresh":  # scripts/bench --fresh (fresh.py)
        from fresh import fresh_table, fresh_targets
        results["targets"], results["resolve"] = fresh_targets(results, target), {}
        text = "\n".join(fresh_table(results) + targets_block(results))
    else:
        results["targets"], results["resolve"] = targets(results)
        text = table(results)
    results["table"] = text.splitlines()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(text)
    print(f"\nJSON: {path}")
