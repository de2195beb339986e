"""Scale: many idle keep-alive connections, and a client that must not notice.

Starts the server (maitre by default) with a raised RLIMIT_NOFILE, a
connection_limit above the number of connections and a long channel_timeout,
then:

1. a probe client sends one request every 10 ms on one keep-alive connection
   for --probe-seconds: the baseline p50/p99;
2. opens --connections connections (10,000), each sends one request, reads the
   response and then stays open, idle; the server's RSS (summed over its
   process tree) before and after gives the memory per idle connection;
3. the probe runs again with all of them open: its p50/p99 show whether idle
   connections slow the server down;
4. a sample of the idle connections sends a second request, to check they
   were really kept open.

    python bench/idle.py [--server maitre|waitress] [--connections 10000] [--json]
"""

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time

import servers
from servers import SERVERS, Running

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def raise_own_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return need
    try:  # only root may raise the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        return need
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def read_response(sock, buf=b""):
    """Read one response with a Content-Length body; return (status, rest)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed in the response body")
        rest += data
    return status, rest[length:]


def open_idle(port, count, deadline_s, batch=250):
    """Up to count connections, each having had one request answered 200;
    stops early past deadline_s (a server may accept very slowly)."""
    conns = []
    failures = 0
    deadline = time.monotonic() + deadline_s
    while len(conns) + failures < count and time.monotonic() < deadline:
        group = []
        for _ in range(min(batch, count - len(conns) - failures)):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(REQUEST)
                group.append(s)
            except OSError:
                failures += 1
        for s in group:
            try:
                status, _ = read_response(s)
                if status != 200:
                    raise ConnectionError(f"status {status}")
                conns.append(s)
            except (OSError, ValueError):
                failures += 1
                s.close()
    return conns, failures


def probe(port, seconds, interval=0.010):
    """One request every ``interval`` on one keep-alive connection: latencies."""
    latencies, errors = [], 0
    sock = None
    start = time.monotonic()
    n = 0
    while True:
        due = start + n * interval
        now = time.monotonic()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        n += 1
        t0 = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(REQUEST)
            status, _ = read_response(sock)
            if status != 200:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
        except (OSError, ValueError):
            errors += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return summarize(latencies, errors)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summarize(latencies, errors):
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 3) if latencies else None,
        "max_ms": round(max(latencies), 3) if latencies else None,
    }


def check_still_open(conns, sample=100):
    """A second request on a sample of the idle connections."""
    ok = 0
    step = max(1, len(conns) // sample)
    picked = conns[::step][:sample]
    for s in picked:
        try:
            s.sendall(REQUEST)
            status, _ = read_response(s)
            ok += status == 200
        except (OSError, ValueError):
            pass
    return ok, len(picked)


def settle_rss(pid, wait=0.5):
    time.sleep(wait)
    return servers.tree_rss_kib(pid)


def settings(server, connections):
    limit = str(connections + 1000)
    if server == "maitre":
        return {"connection_limit": limit, "channel_timeout": "3600"}
    if server == "waitress":
        # select() cannot watch descriptors past 1024: Waitress needs poll().
        return {"connection_limit": limit, "channel_timeout": "3600", "asyncore_use_poll": "true"}
    raise SystemExit(f"idle.py: no settings for {server!r} (maitre or waitress)")


def run(server_name, connections, probe_seconds, log_dir, open_deadline):
    need = connections + 1000
    client_limit = raise_own_nofile(need)
    if client_limit < connections + 50:
        raise SystemExit(f"RLIMIT_NOFILE is {client_limit}: cannot open {connections} connections")
    server = SERVERS[server_name]
    log = os.path.join(log_dir, f"idle-{server_name}.log")
    out = {"server": server_name, "connections": connections, "probe_seconds": probe_seconds}
    with Running(server, "hello", log, extra=settings(server_name, connections), nofile=need) as r:
        r.wait_ready(lambda port: read_response(_one(port)))
        out["baseline"] = probe(r.port, probe_seconds)
        rss_before = settle_rss(r.pid)
        t0 = time.monotonic()
        conns, failures = open_idle(r.port, connections, open_deadline)
        out["open_seconds"] = round(time.monotonic() - t0, 2)
        out["opened"] = len(conns)
        out["open_failures"] = failures
        rss_after = settle_rss(r.pid)
        out["rss_before_kib"] = rss_before
        out["rss_after_kib"] = rss_after
        out["rss_per_connection_bytes"] = (
            round((rss_after - rss_before) * 1024 / len(conns)) if conns else None
        )
        out["with_idle"] = probe(r.port, probe_seconds)
        ok, sampled = check_still_open(conns)
        out["still_open"] = f"{ok}/{sampled}"
        out["server_alive"] = r.alive()
        for s in conns:
            s.close()
    return out


def _one(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(REQUEST)
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="maitre", choices=["maitre", "waitress"])
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--probe-seconds", type=float, default=5)
    p.add_argument(
        "--open-deadline",
        type=float,
        default=180,
        help="stop opening connections after this many seconds (180)",
    )
    p.add_argument("--log-dir", default=tempfile.gettempdir())
    p.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = p.parse_args(argv)
    out = run(args.server, args.connections, args.probe_seconds, args.log_dir, args.open_deadline)
    b, w = out["baseline"], out["with_idle"]
    print(
        f"{args.server}: {out['opened']} of {args.connections} idle connections opened in "
        f"{out['open_seconds']} s "
        f"({out['open_failures']} failed); RSS {out['rss_before_kib'] / 1024:.1f} -> "
        f"{out['rss_after_kib'] / 1024:.1f} MiB = {out['rss_per_connection_bytes']} bytes each; "
        f"probe p50/p99 {b['p50_ms']}/{b['p99_ms']} ms alone, "
        f"{w['p50_ms']}/{w['p99_ms']} ms with them ({w['errors']} errors); "
        f"still open {out['still_open']}"
    )
    if args.json:
        print(json.dumps(out))
    # Too slow to open them all is a result; a dead server or probe is not.
    healthy = out["opened"] > 0 and out["server_alive"] and w["requests"] > 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
