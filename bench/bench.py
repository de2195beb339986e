"""The benchmark: every scenario against every server with wrk, on loopback.

Run through bench/run (which installs the peers); see bench/README.md.
Each cell (server x scenario x repetition) starts a fresh server on a free
port, waits until it answers one request correctly, warms it up with wrk,
then measures: wrk's requests/s, latency percentiles and errors, plus the
server's CPU seconds and peak RSS from /proc. Repetitions are rep-major and
the server order rotates between them, so drift on the machine hits every
server alike. Raw results go to bench/results/<UTC date>-<host>.json.
"""

import argparse
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time

import servers
from servers import SERVERS, Running, ServerError, request

HERE = servers.HERE
POST_BYTES = 64 * 1024


class HarnessError(Exception):
    """The harness itself is broken (as opposed to a server being slow)."""


# --- scenarios -------------------------------------------------------------


def _show(path):
    """A path relative to the current directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _expect(status_body):
    def check(port, method="GET", body=None):
        status, headers, data = request(port, method=method, body=body)
        want_status, want = status_body(body)
        if status != want_status or data != want:
            raise ServerError(
                f"readiness request: got {status} with {len(data)} body bytes "
                f"({data[:60]!r}...), want {want_status} with {len(want)}"
            )

    return check


def _check_get(expected):
    check = _expect(lambda _: (200, expected))
    return lambda port: check(port)


def _check_echo(port):
    payload = bytes(range(256)) * 4
    _expect(lambda body: (200, body))(port, method="POST", body=payload)


class Scenario:
    def __init__(self, name, title, app, check, wrk_args=()):
        self.name = name
        self.title = title
        self.app = app
        self.check = check
        self.wrk_args = list(wrk_args)


def scenarios():
    import apps

    hello = _check_get(apps.HELLO)
    return {
        s.name: s
        for s in [
            Scenario("hello", "hello, keep-alive", "hello", hello),
            Scenario(
                "hello_close",
                "hello, Connection: close",
                "hello",
                hello,
                ["-H", "Connection: close"],
            ),
            Scenario("big", "1 MiB body", "big", _check_get(apps.BIG)),
            Scenario(
                "stream",
                "64 KiB in 256 pieces, no Content-Length",
                "stream",
                _check_get(apps.PIECE * apps.PIECES),
            ),
            Scenario(
                "echo",
                "64 KiB POST echoed",
                "echo",
                _check_echo,
                ["-s", os.path.join(HERE, "post.lua")],
            ),
            Scenario("sleep", "app sleeps 10 ms", "sleep", hello),
            Scenario("flask", "Flask hello", "flask_hello", hello),
        ]
    }


# --- wrk ------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value, unit):
    return float(value) * _UNITS[unit]


def parse_wrk(text):
    """wrk --latency output -> dict; HarnessError when it cannot be read."""
    out = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", text, re.M)
    if not m:
        raise HarnessError("wrk output has no Requests/sec line:\n" + text)
    out["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    if not m:
        raise HarnessError("wrk output has no 'N requests in T' line:\n" + text)
    out["requests"] = int(m.group(1))
    out["seconds"] = _ms(m.group(2), m.group(3)) / 1e3
    percentiles = {}
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", dist[1], re.M):
            percentiles[p] = _ms(value, unit)
    for p in ("50", "99"):
        if p not in percentiles:
            raise HarnessError(f"wrk output has no {p}% latency line:\n" + text)
    out["latency_ms"] = percentiles
    m = re.search(
        r"^\s+Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)",
        text,
        re.M,
    )
    if m:
        out["latency_avg_ms"] = _ms(m.group(1), m.group(2))
        out["latency_max_ms"] = _ms(m.group(5), m.group(6))
        # Little's law: how many connections were actually in service on
        # average. Far below -c means some connections were starved (wrk's
        # latencies only count the requests that completed).
        out["concurrency"] = round(out["rps"] * out["latency_avg_ms"] / 1e3, 1)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx_3xx": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for key, value in zip(("connect", "read", "write", "timeout"), m.groups()):
            errors[key] = int(value)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors["non_2xx_3xx"] = int(m.group(1))
    out["errors"] = errors
    out["errors_total"] = sum(errors.values())
    return out


def wrk_command(args, scenario, port, seconds):
    return [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        f"--timeout={args.wrk_timeout}s",
        "--latency",
        *scenario.wrk_args,
        f"http://127.0.0.1:{port}/",
    ]


def run_wrk(argv, seconds):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"wrk did not finish: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise HarnessError(f"wrk exited with {done.returncode}: {done.stderr}{done.stdout}")
    return done.stdout


# --- one cell --------------------------------------------------------------


def run_cell(args, server, scenario, log_dir):
    """Start, check, warm up, measure, stop. Returns the cell's record."""
    cell = {"server": server.name, "scenario": scenario.name}
    log = os.path.join(log_dir, f"{server.name}-{scenario.name}.log")
    with Running(server, scenario.app, log) as running:
        t0 = time.monotonic()
        running.wait_ready(scenario.check)
        cell["startup_s"] = round(time.monotonic() - t0, 3)
        if args.warmup > 0:
            run_wrk(wrk_command(args, scenario, running.port, args.warmup), args.warmup)
        argv = wrk_command(args, scenario, running.port, args.duration)
        cpu0 = servers.tree_cpu_seconds(running.pid)
        wall0 = time.monotonic()
        text = run_wrk(argv, args.duration)
        wall = time.monotonic() - wall0
        cpu = servers.tree_cpu_seconds(running.pid) - cpu0
        if not running.alive():
            raise ServerError(
                f"{server.name} died during the run (status {running.proc.returncode}):\n"
                + running.log_tail()
            )
        running.memory.sample()
        nprocs = len(servers.process_tree(running.pid))
        cell["wrk"] = " ".join(argv[:-1])
        cell.update(parse_wrk(text))
        cell["cpu_s"] = round(cpu, 3)
        cell["cpu_util"] = round(cpu / wall, 3) if wall > 0 else None
        cell["cpu_us_per_request"] = (
            round(cpu / cell["requests"] * 1e6, 2) if cell["requests"] else None
        )
        cell["processes"] = nprocs
        running.memory.stop()
        cell["rss_peak_kib"] = running.memory.peak_kib
        cell["rss_max_sampled_kib"] = running.memory.max_rss_kib
        cell["wrk_output"] = text
    return cell


# --- environment -----------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version():
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else "wrk"


def environment(args):
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "wrk_version": wrk_version(),
        "wrk_params": f"-t{args.wrk_threads} -c{args.connections} -d{args.duration}s "
        f"--timeout={args.wrk_timeout}s --latency",
        "warmup_s": args.warmup,
        "reps": args.reps,
        "threads_per_server": servers.THREADS,
        "quick": args.quick,
        "label": args.label,
    }


# --- the run ---------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run", description="maitre and its peers side by side under wrk."
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="maitre and Waitress only, current python, 1 s per cell, 1 rep",
    )
    p.add_argument("-d", "--duration", type=int, help="seconds per measured run (10; quick 1)")
    p.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("-t", "--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--wrk-timeout", type=float, default=2, help="wrk --timeout seconds (2)")
    p.add_argument(
        "--warmup", type=int, help="seconds of wrk before each measured run (1; quick 0)"
    )
    p.add_argument("--reps", type=int, help="repetitions of each cell (3; quick 1)")
    p.add_argument("--servers", help="comma-separated subset of: " + ",".join(SERVERS))
    p.add_argument("--scenarios", help="comma-separated subset (default: all)")
    p.add_argument("--out", help="results directory (bench/results; quick: bench/results/quick)")
    p.add_argument("--label", default="", help="a note printed at the top of latest.md")
    p.add_argument("--idle-connections", type=int, help="idle.py connections (10000; quick 1000)")
    p.add_argument("--no-idle", action="store_true", help="skip the idle-connection test")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-request overhead test")
    p.add_argument("--install-status", help=argparse.SUPPRESS)
    p.add_argument("--freeze", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 1 if args.quick else 10
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 0 if args.quick else 1
    if args.idle_connections is None:
        args.idle_connections = 1000 if args.quick else 10000
    if args.out is None:
        args.out = os.path.join(HERE, "results", "quick" if args.quick else "")
    if args.duration < 1 or args.warmup < 0:
        p.error("wrk takes whole seconds: --duration >= 1, --warmup >= 0")
    return args


def pick(names, table, what):
    if not names:
        return list(table)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in table]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(table)})")
    return chosen


def results_path(out, quick):
    if quick:
        return os.path.join(out, "quick.json")
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    path = os.path.join(out, f"{day}-{host}.json")
    n = 2
    while os.path.exists(path):
        path = os.path.join(out, f"{day}-{host}-{n}.json")
        n += 1
    return path


def save(path, results):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)


def load_install_status(path):
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick and not args.servers:
        args.servers = "maitre,waitress"
    server_names = pick(args.servers, SERVERS, "servers")
    all_scenarios = scenarios()
    scenario_names = pick(args.scenarios, all_scenarios, "scenarios")
    os.makedirs(args.out, exist_ok=True)
    log_dir = os.path.join(args.out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    path = results_path(args.out, args.quick)
    install = load_install_status(args.install_status)

    import apps

    results = {
        "environment": environment(args),
        "servers": {},
        "scenarios": {n: all_scenarios[n].title for n in scenario_names},
        "cells": [],
        "failures": [],
    }
    if args.freeze:
        with open(args.freeze) as f:
            results["environment"]["freeze"] = f.read().split()

    harness_broken = []
    runnable = []
    for name in server_names:
        server = SERVERS[name]
        reason = server.missing_reason()
        status = install.get(server.pip_name.lower(), install.get(name))
        if reason and status and status != "ok":
            reason = status
        results["servers"][name] = {
            "describe": server.describe,
            "version": server.version(),
            "missing": reason,
        }
        if reason:
            print(f"{name}: MISSING ({reason})", flush=True)
            if args.quick or name == "maitre":
                harness_broken.append(f"{name} is missing: {reason}")
        else:
            runnable.append(name)
    if "flask" in scenario_names and not apps.flask_available():
        results["scenarios_missing"] = {"flask": "Flask is not installed"}
        scenario_names.remove("flask")
        print("flask scenario: MISSING (Flask is not installed)", flush=True)

    total = args.reps * len(scenario_names) * len(runnable)
    done = 0
    started = time.monotonic()
    for rep in range(args.reps):
        order = (
            runnable[rep % len(runnable) :] + runnable[: rep % len(runnable)] if runnable else []
        )
        for scenario_name in scenario_names:
            scenario = all_scenarios[scenario_name]
            for name in order:
                done += 1
                label = f"[{done}/{total}] rep {rep + 1} {scenario_name:<11} {name:<9}"
                try:
                    cell = run_cell(args, SERVERS[name], scenario, log_dir)
                except (ServerError, HarnessError, OSError) as exc:
                    kind = "harness" if isinstance(exc, HarnessError) else "server"
                    results["failures"].append(
                        {
                            "server": name,
                            "scenario": scenario_name,
                            "rep": rep,
                            "kind": kind,
                            "error": str(exc)[-3000:],
                        }
                    )
                    print(f"{label} FAILED ({kind}): {str(exc).splitlines()[0]}", flush=True)
                    if isinstance(exc, HarnessError) or args.quick or name == "maitre":
                        harness_broken.append(f"{name}/{scenario_name}: {str(exc).splitlines()[0]}")
                    save(path, results)
                    continue
                cell["rep"] = rep
                results["cells"].append(cell)
                save(path, results)
                print(
                    f"{label} {cell['rps']:>10.0f} req/s  p50 {cell['latency_ms']['50']:7.2f} ms"
                    f"  p99 {cell['latency_ms']['99']:7.2f} ms  errors {cell['errors_total']:<5}"
                    f" cpu {cell['cpu_us_per_request'] or 0:6.1f} us/req"
                    f"  rss {cell['rss_peak_kib'] / 1024:6.1f} MiB",
                    flush=True,
                )
    results["environment"]["loadavg_end"] = os.getloadavg()
    results["environment"]["cells_seconds"] = round(time.monotonic() - started, 1)

    if not args.no_overhead and "maitre" in runnable:
        results["overhead"] = run_helper(
            [sys.executable, os.path.join(HERE, "overhead.py"), "--json"]
            + (["--calls", "200000"] if args.quick else []),
            harness_broken,
            "overhead.py",
        )
    if not args.no_idle:
        idle_servers = [s for s in ("maitre", "waitress") if s in runnable]
        results["idle"] = {}
        for name in idle_servers:
            results["idle"][name] = run_helper(
                [
                    sys.executable,
                    os.path.join(HERE, "idle.py"),
                    "--json",
                    "--server",
                    name,
                    "--connections",
                    str(args.idle_connections),
                    "--probe-seconds",
                    "1" if args.quick else "5",
                    "--log-dir",
                    log_dir,
                ],
                harness_broken,
                f"idle.py --server {name}",
            )
    results["harness_errors"] = harness_broken
    save(path, results)
    print(f"raw results: {_show(path)}", flush=True)

    import report

    try:
        report.write_report(path, args.out)
    except Exception as exc:  # a broken report is a broken harness
        harness_broken.append(f"report.py: {exc!r}")
        raise
    finally:
        print(f"total {time.monotonic() - started:.1f} s", flush=True)
    if harness_broken:
        print("harness errors:\n  " + "\n  ".join(harness_broken), file=sys.stderr)
        return 1
    return 0


def run_helper(argv, harness_broken, what):
    """Run overhead.py or idle.py; their last stdout line is JSON."""
    print(f"running {what}", flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    sys.stderr.write(done.stderr)
    lines = done.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        data = None
    if done.returncode != 0 or data is None:
        harness_broken.append(f"{what} failed (status {done.returncode}): {done.stdout[-500:]}")
        return {"error": f"status {done.returncode}: {done.stdout[-1000:]}{done.stderr[-1000:]}"}
    for line in lines[:-1]:
        print("  " + line, flush=True)
    return data


if __name__ == "__main__":
    sys.exit(main())
