"""Prometheus metrics (``metrics_listen``): scraped from a live server and
parsed back, after a known mix of requests; the gauges while requests and
connections are held; the shared block (slots, retiring, restarts)."""

import os
import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

from apps.live import GUARD, build_request, free_port, live, wait_for  # noqa: F401
from maitre import metrics, server as server_module

# -- a tiny Prometheus text-format parser --------------------------------------------

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


class Scrape:
    """Samples ``{(name, ((label, value), ...)): float}`` and the TYPE and
    HELP of each family; every sample must belong to a declared family."""

    def __init__(self, text):
        assert text.endswith("\n")
        self.samples = {}
        self.types = {}
        self.helps = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, text_ = line[7:].partition(" ")
                self.helps[name] = text_
            elif line.startswith("# TYPE "):
                name, kind = line[7:].split(" ")
                assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
                self.types[name] = kind
            else:
                match = SAMPLE_RE.match(line)
                assert match, f"not a sample line: {line!r}"
                name, labels, value = match.groups()
                pairs = tuple(LABEL_RE.findall(labels or ""))
                key = (name, pairs)
                assert key not in self.samples, f"duplicate sample {line!r}"
                self.samples[key] = float(value)
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in self.types or self.types.get(family) == "histogram", line
                assert name in self.helps or family in self.helps, line

    def value(self, name, **labels):
        return self.samples[(name, tuple(labels.items()))]

    def buckets(self, name):
        """``[(le, cumulative count)]`` in the order given."""
        return [
            (dict(labels)["le"], value)
            for (n, labels), value in self.samples.items()
            if n == name + "_bucket"
        ]


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=GUARD) as response:
        assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
        return Scrape(response.read().decode())


def scrape_until(port, predicate):
    """The first scrape for which ``predicate`` holds (the worker counts a
    request just after handing its response over, so a client may be quicker)."""
    result = None

    def check():
        nonlocal result
        result = scrape(port)
        return predicate(result)

    assert wait_for(check, interval=0.02), f"never true; last scrape: {result.samples!r}"
    return result


def by_class(s):
    return {c: s.value("maitre_requests_total", status=c) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}


# -- the application ------------------------------------------------------------------

BODY_200 = b"x" * 100


class App:
    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/missing":
            start_response("404 Not Found", [("Content-Length", "7")])
            return [b"missing"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/block":
            self.entered.set()
            self.release.wait(GUARD)
        body = environ["wsgi.input"].read() or BODY_200
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


def request(server, method="GET", path="/", body=b""):
    """One request on its own connection: (bytes sent, response, bytes read)."""
    raw = build_request(method, path, [("Connection", "close")], body)
    with server.connect() as client:
        client.send(raw)
        response = client.read_response(method)
        received = len(response.raw_head) + len(response.body)
    return len(raw), response, received


@pytest.fixture
def metered(live):
    """A server with metrics on: (server, metrics port, app)."""

    def start(**kw):
        port = free_port()
        app = App()
        server = live(app, metrics_listen=f"127.0.0.1:{port}", **kw)
        assert wait_for(lambda: _listening(port)), "the metrics endpoint never came up"
        return server, port, app

    return start


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- live ---------------------------------------------------------------------------


def test_known_mix_of_requests(metered):
    server, port, _ = metered()
    sent = received = 0
    statuses = []
    upload = b"u" * 5000
    plan = [("GET", "/", b"")] * 5 + [("GET", "/missing", b"")] * 2
    plan += [("GET", "/boom", b""), ("POST", "/upload", upload)]
    for method, path, body in plan:
        n_out, response, n_in = request(server, method, path, body)
        sent += n_out
        received += n_in
        statuses.append(response.status)
    assert statuses == [200] * 5 + [404, 404, 500, 200]

    s = scrape_until(port, lambda s: sum(by_class(s).values()) >= len(plan))
    assert by_class(s) == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 2, "5xx": 1}
    assert s.value("maitre_requests_total", status="other") == 0
    assert s.value("maitre_bytes_received_total") >= sent >= len(upload)
    assert s.value("maitre_bytes_sent_total") >= received >= 5 * len(BODY_200) + len(upload)
    assert s.value("maitre_connections_total") >= len(plan)

    buckets = s.buckets("maitre_request_duration_seconds")
    les = [le for le, _ in buckets]
    assert les[-1] == "+Inf" and les[:-1] == sorted(les[:-1], key=float)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert counts[-1] == s.value("maitre_request_duration_seconds_count") == len(plan)
    assert 0 < s.value("maitre_request_duration_seconds_sum") < len(plan) * GUARD
    assert s.types["maitre_request_duration_seconds"] == "histogram"
    for name in ("maitre_requests_total", "maitre_bytes_sent_total", "maitre_worker_restarts_total"):
        assert s.types[name] == "counter"
    assert s.value("maitre_worker_restarts_total") == 0

    settled = scrape_until(port, lambda s: s.value("maitre_requests_in_flight") == 0)
    assert settled.value("maitre_task_queue_depth") == 0


def test_in_flight_while_a_request_blocks(metered):
    server, port, app = metered()
    s = scrape(port)
    assert s.value("maitre_requests_in_flight") == 0
    with server.connect() as client:
        client.send(build_request("GET", "/block"))
        assert app.entered.wait(GUARD)
        during = scrape(port)
        assert during.value("maitre_requests_in_flight") == 1
        assert sum(by_class(during).values()) == 0
        app.release.set()
        assert client.read_response().status == 200
    after = scrape_until(port, lambda s: s.value("maitre_requests_in_flight") == 0)
    assert by_class(after)["2xx"] == 1


def test_queue_depth_when_every_thread_is_busy(metered):
    server, port, app = metered(threads=1)
    first, second = server.connect(), server.connect()
    try:
        first.send(build_request("GET", "/block"))
        assert app.entered.wait(GUARD)
        second.send(build_request("GET", "/"))
        s = scrape_until(port, lambda s: s.value("maitre_task_queue_depth") == 1)
        assert s.value("maitre_requests_in_flight") == 1
        app.release.set()
        assert first.read_response().status == 200
        assert second.read_response().status == 200
    finally:
        app.release.set()
        first.close()
        second.close()
    scrape_until(port, lambda s: s.value("maitre_task_queue_depth") == 0)


def test_open_connections_while_a_keep_alive_connection_is_held(metered):
    server, port, _ = metered()
    assert scrape(port).value("maitre_connections_open") == 0
    client = server.connect()
    try:
        assert client.request("GET", "/").status == 200
        # Kept alive after the response: still open.
        s = scrape_until(port, lambda s: s.value("maitre_connections_open") == 1)
        assert s.value("maitre_connections_total") == 1
    finally:
        client.close()
    scrape_until(port, lambda s: s.value("maitre_connections_open") == 0)


def test_endpoint_paths_and_stop(metered):
    server, port, _ = metered()
    root = scrape(port, "/")
    assert ("maitre_requests_in_flight", ()) in root.samples
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=GUARD)
    assert info.value.code == 404
    assert any(t.name == "maitre-metrics" for t in threading.enumerate())
    server.stop()
    assert not _listening(port)
    assert not any(t.name == "maitre-metrics" for t in threading.enumerate())


def test_nothing_when_metrics_listen_is_unset(live, monkeypatch):
    hooks = []
    original = server_module._hooks

    def spy(*args, **kw):
        hooks.append(original(*args, **kw))
        return hooks[-1]

    monkeypatch.setattr(server_module, "_hooks", spy)
    server = live(App())
    with server.connect() as client:
        assert client.request("GET", "/").status == 200
    # No slot handed to the native server (so nothing counts), no endpoint.
    assert [h.get("metrics") for h in hooks] == [None]
    assert not any(t.name == "maitre-metrics" for t in threading.enumerate())


def test_bad_slot_is_refused():
    from maitre import _maitre

    with pytest.raises(ValueError, match="not prepared"):
        _maitre.Server(App(), [], [], server_module._hooks(bytearray(256)))


# -- the block ------------------------------------------------------------------------


def test_assigned_slot_counts_and_retire_keeps_totals(live):
    block = metrics.MetricsBlock(2)
    metrics.assign(block, 1)
    try:
        # metrics_listen is set, but a worker's server serves no endpoint.
        port = free_port()
        server = live(App(), metrics_listen=f"127.0.0.1:{port}")
        for _ in range(3):
            request(server)
        assert wait_for(lambda: block.totals()[("requests", "2xx")] == 3)
        assert block.pid(1) == os.getpid() and block.pid(0) == 0
        assert not _listening(port)
        server.stop()
    finally:
        metrics.assign(None, 0)

    before = block.totals()
    assert before[("duration_count", "")] == 3
    block.retire(1)
    after = block.totals()
    assert after == before, "retiring a slot must not change the totals"
    assert block.pid(1) == 0
    fresh = Scrape(block.render())
    assert fresh.value("maitre_requests_total", status="2xx") == 3
    # The slot itself is empty again, its magic kept: a new server can use it.
    slot = block.slot(1).cast("Q")
    assert slot[0] == metrics.layout()["magic"] and sum(slot[3:]) == 0
    assert slot[2] == 1  # generation
    block.count_restart()
    block.count_restart()
    assert Scrape(block.render()).value("maitre_worker_restarts_total") == 2


def test_retire_drops_gauges():
    block = metrics.MetricsBlock(1)
    cells = block.slot(0).cast("Q")
    offsets = {(n, label): off // 8 for n, _, off, label in metrics.layout()["fields"]}
    cells[offsets[("in_flight", "")]] = 2
    cells[offsets[("bytes_sent", "")]] = 40
    assert block.totals()[("in_flight", "")] == 2
    block.retire(0)
    totals = block.totals()
    assert (totals[("in_flight", "")], totals[("bytes_sent", "")]) == (0, 40)


def test_gauge_below_zero_reads_signed():
    block = metrics.MetricsBlock(1)
    cells = block.slot(0).cast("Q")
    off = {(n, label): o // 8 for n, _, o, label in metrics.layout()["fields"]}
    cells[off[("queue_depth", "")]] = (1 << 64) - 1
    assert block.totals()[("queue_depth", "")] == -1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_process_counts_are_seen_by_the_parent():
    block = metrics.MetricsBlock(2)
    off = {(n, label): o // 8 for n, _, o, label in metrics.layout()["fields"]}
    pid = os.fork()
    if pid == 0:  # the child: count into slot 1 and leave at once
        try:
            block.slot(1).cast("Q")[off[("requests", "5xx")]] = 7
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert block.totals()[("requests", "5xx")] == 7
    block.retire(1)
    assert block.totals()[("requests", "5xx")] == 7


def test_parse_listen():
    import socket as s

    assert metrics.parse_listen("127.0.0.1:9100") == (s.AF_INET, "127.0.0.1", 9100)
    assert metrics.parse_listen("[::1]:9100") == (s.AF_INET6, "::1", 9100)
    assert metrics.parse_listen("*:9100") == (s.AF_INET, "0.0.0.0", 9100)
