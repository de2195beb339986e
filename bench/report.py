"""Turn a raw results JSON into latest.md and PNG plots.

    python bench/report.py [RESULTS.json] [--out DIR]

Without a path it takes the newest bench/results/*.json. Writes DIR/latest.md
(DIR defaults to the JSON's directory) and, when matplotlib is importable,
DIR/rps.png and DIR/p99.png. Every number is the median over the repetitions.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _show(path):
    """A path relative to the current directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def load(path):
    with open(path) as f:
        return json.load(f)


def medians(results):
    """{(server, scenario): {metric: median}} over the repetitions."""
    groups = {}
    for cell in results["cells"]:
        groups.setdefault((cell["server"], cell["scenario"]), []).append(cell)
    out = {}
    for key, cells in groups.items():

        def med(get, cells=cells):
            values = [v for v in (get(c) for c in cells) if v is not None]
            return statistics.median(values) if values else None

        out[key] = {
            "rps": med(lambda c: c["rps"]),
            "p50": med(lambda c: c["latency_ms"]["50"]),
            "p99": med(lambda c: c["latency_ms"]["99"]),
            "errors": med(lambda c: c["errors_total"]),
            "cpu_us": med(lambda c: c["cpu_us_per_request"]),
            "cpu_util": med(lambda c: c.get("cpu_util")),
            "rss_mib": med(lambda c: c["rss_peak_kib"] / 1024),
            "concurrency": med(lambda c: c.get("concurrency")),
            "reps": len(cells),
        }
    return out


def failed_cells(results):
    out = {}
    for f in results.get("failures", []):
        out.setdefault((f["server"], f["scenario"]), []).append(f["error"].splitlines()[0])
    return out


def _fmt_int(v):
    return f"{v:,.0f}"


def _fmt_ms(v):
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _fmt_num(v, digits=1):
    return f"{v:,.{digits}f}"


def table(results, stats, metric, fmt, title_note=""):
    servers = list(results["servers"])
    scenarios = list(results["scenarios"])
    failed = failed_cells(results)
    missing_scen = results.get("scenarios_missing", {})
    head = "| server | " + " | ".join(scenarios) + " |"
    rows = [head, "|---|" + "---:|" * len(scenarios)]
    for s in servers:
        info = results["servers"][s]
        cells = []
        for sc in scenarios:
            if info.get("missing"):
                cells.append("missing")
            elif sc in missing_scen:
                cells.append("missing")
            elif (s, sc) in stats and stats[(s, sc)][metric] is not None:
                value = fmt(stats[(s, sc)][metric])
                if (s, sc) in failed:
                    value += f" ({len(failed[(s, sc)])} failed)"
                cells.append(value)
            elif (s, sc) in failed:
                cells.append("failed")
            else:
                cells.append("-")
        name = f"**{s}**" if s == "maitre" else s
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + ("\n\n" + title_note if title_note else "")


def ratio_table(results, stats):
    scenarios = list(results["scenarios"])
    rows = ["| maitre / peer | " + " | ".join(scenarios) + " |", "|---|" + "---:|" * len(scenarios)]
    for s in results["servers"]:
        if s == "maitre":
            continue
        cells = []
        for sc in scenarios:
            mine = stats.get(("maitre", sc), {}).get("rps")
            theirs = stats.get((s, sc), {}).get("rps")
            if results["servers"][s].get("missing"):
                cells.append("missing")
            elif mine and theirs:
                cells.append(f"{mine / theirs:.2f}x")
            else:
                cells.append("-")
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def starved_cells(results, stats):
    """Cells where, by Little's law (req/s x mean latency), fewer than half of
    wrk's connections were in service on average: the server made the others
    wait outside any measured request (reconnecting after a close, or starved
    in the accept queue, which wrk's latencies do not show)."""
    env = results["environment"]
    m = re.search(r"-c(\d+)", env["wrk_params"])
    if not m:
        return None
    conns = int(m.group(1))
    low = [
        f"{s}/{sc} {v['concurrency']:.0f}"
        for (s, sc), v in sorted(stats.items())
        if v.get("concurrency") is not None and v["concurrency"] < conns / 2
    ]
    if not low:
        return None
    return (
        f"Connections in service on average (req/s x mean latency) below half of the {conns} "
        f"wrk holds: " + ", ".join(low) + ". The rest of the time those connections were "
        "reconnecting after the server closed them, or waiting unserved; wrk's latency "
        "figures only cover requests that were sent and answered."
    )


def overhead_section(results, stats):
    ov = results.get("overhead")
    if not ov:
        return None
    if "error" in ov:
        return f"overhead.py failed: {ov['error']}"
    cell = stats.get(("maitre", "hello"))
    lines = [
        "| | us per request |",
        "|---|---:|",
        f"| hello app called in-process (environ copy + call + iterate + close; best of "
        f"{ov['repeat']} x {ov['calls']:,} calls) | {ov['us_per_call']:.3f} |",
    ]
    if cell and cell["cpu_us"] is not None:
        diff = cell["cpu_us"] - ov["us_per_call"]
        lines.append(
            f"| maitre server CPU per request, hello keep-alive (all threads, user + system) "
            f"| {cell['cpu_us']:.3f} |"
        )
        lines.append(f"| **maitre's own overhead per request** (difference) | **{diff:.3f}** |")
    else:
        lines.append("| maitre hello keep-alive run | not measured |")
    others = [
        f"{s} {stats[(s, 'hello')]['cpu_us']:.1f}"
        for s in results["servers"]
        if s != "maitre" and stats.get((s, "hello"), {}).get("cpu_us") is not None
    ]
    text = "\n".join(lines)
    if others:
        text += (
            "\n\nServer CPU per request for the peers in the same scenario (us): "
            + ", ".join(others)
            + "."
        )
    return text


def idle_section(results):
    idle = results.get("idle")
    if not idle:
        return None
    rows = [
        "| server | idle connections opened | RSS before -> after (MiB) | bytes per connection "
        "| probe p50 / p99 alone (ms) | probe p50 / p99 with idle (ms) | probe errors "
        "| idle still served |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in idle.items():
        if "error" in r:
            rows.append(f"| {name} | failed: {r['error'][:200]!r} | | | | | | |")
            continue
        b, w = r["baseline"], r["with_idle"]
        opened = f"{r['opened']:,}"
        if r["opened"] < r["connections"]:
            opened += f" of {r['connections']:,}"
        opened += f" in {r['open_seconds']} s"
        if r["open_failures"]:
            opened += f" ({r['open_failures']} failed)"
        rows.append(
            f"| {name} | {opened} "
            f"| {r['rss_before_kib'] / 1024:.1f} -> {r['rss_after_kib'] / 1024:.1f} "
            f"| {r['rss_per_connection_bytes']:,} | {b['p50_ms']} / {b['p99_ms']} "
            f"| {w['p50_ms']} / {w['p99_ms']} | {w['errors']} | {r['still_open']} |"
        )
    probe = next((r for r in idle.values() if "error" not in r), None)
    note = ""
    if probe:
        note = (
            f"\n\nEach idle connection sent one request, read the response and stayed open. "
            f"The probe is one keep-alive client sending a request every 10 ms for "
            f"{probe['probe_seconds']:g} s, first with no other connection, then with all the "
            f"idle ones open. maitre runs with `connection_limit` above the count and "
            f"`channel_timeout=3600`; Waitress the same plus `asyncore_use_poll=True` (its "
            f"default `select()` cannot watch descriptors past 1024)."
        )
    return "\n".join(rows) + note


def _plot(results, stats, metric, ylabel, path, log=True):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = [s for s in results["servers"] if not results["servers"][s].get("missing")]
    scenarios = list(results["scenarios"])
    width = 0.8 / max(1, len(servers))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(scenarios)), 4.8), dpi=100)
    colors = plt.get_cmap("tab10")
    for i, s in enumerate(servers):
        xs, ys = [], []
        for j, sc in enumerate(scenarios):
            v = stats.get((s, sc), {}).get(metric)
            if v:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v)
        ax.bar(
            xs,
            ys,
            width,
            label=s,
            color=colors(i % 10),
            edgecolor="black" if s == "maitre" else None,
            linewidth=1.2 if s == "maitre" else 0,
        )
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([sc.replace("_", "\n") for sc in scenarios])
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    env = results["environment"]
    ax.set_title(
        f"{ylabel}: median of {env['reps']}, wrk {env['wrk_params']}\n"
        f"{env['cpu_model']}, {env['cores']} cores, {env['date_utc'][:10]}"
        + (" - " + env["label"] if env.get("label") else ""),
        fontsize=9,
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(
        fontsize=8,
        ncol=min(len(servers), 7),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plots(results, stats, out):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "matplotlib is not installed: no plots"
    made = []
    for metric, label, name in (
        ("rps", "requests/s", "rps.png"),
        ("p99", "p99 latency (ms)", "p99.png"),
    ):
        path = os.path.join(out, name)
        _plot(results, stats, metric, label, path)
        made.append(name)
    return made, None


def render(results, stats, pngs, plot_note):
    env = results["environment"]
    parts = ["# maitre benchmark"]
    if env.get("quick"):
        parts.append("> **Quick mode** (harness check: 1 rep, short cells). Not a measurement.")
    if env.get("label"):
        parts.append(f"> **{env['label']}**")
    parts.append(
        "\n".join(
            [
                f"- date: {env['date_utc']}, host `{env['host']}`",
                f"- CPU: {env['cpu_model']}, {env['cores']} cores; load average at start "
                f"{', '.join(f'{x:.2f}' for x in env['loadavg_start'])}"
                + (
                    f", at end {', '.join(f'{x:.2f}' for x in env['loadavg_end'])}"
                    if env.get("loadavg_end")
                    else ""
                ),
                f"- Linux {env['kernel']}, Python {env['python']}, {env['wrk_version']}",
                f"- wrk `{env['wrk_params']}` on loopback, after {env['warmup_s']} s of warm-up; "
                f"each cell is the median of {env['reps']} run(s), servers interleaved "
                f"(rep-major, order rotated per rep), each cell on a freshly started server",
                "- servers (one process, 4 threads unless noted): "
                + "; ".join(
                    " ".join(filter(None, [s, i.get("version")]))
                    + f" (`{i['describe']}`)"
                    + (f" **missing: {i['missing']}**" if i.get("missing") else "")
                    for s, i in results["servers"].items()
                ),
            ]
        )
    )
    parts.append(
        "Scenarios: "
        + "; ".join(f"`{k}` {v}" for k, v in results["scenarios"].items())
        + "."
        + (
            " Missing: "
            + ", ".join(f"`{k}` ({v})" for k, v in results["scenarios_missing"].items())
            if results.get("scenarios_missing")
            else ""
        )
    )
    if pngs:
        parts.append("\n".join(f"![{p}]({p})" for p in pngs))
    elif plot_note:
        parts.append(f"({plot_note})")
    parts.append("## Requests per second\n\n" + table(results, stats, "rps", _fmt_int))
    parts.append("## maitre / peer, requests per second\n\n" + ratio_table(results, stats))
    parts.append("## p99 latency (ms)\n\n" + table(results, stats, "p99", _fmt_ms))
    parts.append("## p50 latency (ms)\n\n" + table(results, stats, "p50", _fmt_ms))
    parts.append(
        "## Errors per run\n\n"
        + table(
            results,
            stats,
            "errors",
            _fmt_int,
            "wrk socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. "
            "wrk counts one read error for every response whose body ends when the server "
            "closes the connection (no Content-Length, no chunked encoding: `stream` on "
            "servers that do not chunk); those responses are still counted as requests.",
        )
    )
    starved = starved_cells(results, stats)
    if starved:
        parts.append(starved)
    parts.append(
        "## Server CPU per request (us)\n\n"
        + table(
            results,
            stats,
            "cpu_us",
            lambda v: _fmt_num(v, 1),
            "utime + stime of the server's process tree (reaped children included) during the "
            "measured run, divided by the requests wrk completed.",
        )
    )
    parts.append(
        "## Peak RSS (MiB)\n\n"
        + table(
            results,
            stats,
            "rss_mib",
            lambda v: _fmt_num(v, 1),
            "Sum of VmHWM over the server's process tree (a forked worker's shared pages "
            "count twice).",
        )
    )
    ov = overhead_section(results, stats)
    if ov:
        parts.append("## The limit: per-request overhead\n\n" + ov)
    idle = idle_section(results)
    if idle:
        parts.append("## Idle connections\n\n" + idle)
    failures = results.get("failures", [])
    if failures:
        parts.append(
            "## Failures\n\n"
            + "\n".join(
                f"- {f['server']} / {f['scenario']} rep {f['rep'] + 1} ({f['kind']}): "
                f"`{f['error'].splitlines()[0][:300]}`"
                for f in failures
            )
        )
    return "\n\n".join(parts) + "\n"


def write_report(path, out=None):
    results = load(path)
    out = out or os.path.dirname(os.path.abspath(path))
    os.makedirs(out, exist_ok=True)
    stats = medians(results)
    pngs, note = plots(results, stats, out)
    md = os.path.join(out, "latest.md")
    with open(md, "w") as f:
        f.write(render(results, stats, pngs, note))
    print(f"report: {_show(md)}" + "".join(f", {p}" for p in pngs), flush=True)
    return md


def newest(directory):
    paths = [p for p in glob.glob(os.path.join(directory, "*.json")) if not p.endswith(".tmp")]
    if not paths:
        raise SystemExit(f"no results JSON in {directory}")
    return max(paths, key=os.path.getmtime)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", help="raw results JSON (newest in bench/results)")
    p.add_argument("--out", help="directory for latest.md and the PNGs (the JSON's own)")
    args = p.parse_args(argv)
    path = args.results or newest(os.path.join(HERE, "results"))
    write_report(path, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
