"""Prometheus metrics: counters in shared memory, summed and served over HTTP.

A ``MetricsBlock`` is one shared anonymous ``mmap``: a *retired* slot (the
totals of workers that have exited, and the master's worker restarts) and
``slots`` worker slots. A server counts into one slot with relaxed atomic
adds from Rust (``hooks["metrics"]`` is ``block.slot(i)``); since the mapping
is shared, a master process reads the slots of the workers it forked. The
layout (names, kinds, offsets) comes from ``_maitre.metrics_layout()``.

For a master process (``workers`` > 1)::

    block = MetricsBlock(workers)          # before forking
    stop = start_endpoint(listen, block)   # serves GET /metrics
    # in worker i, after the fork and before the server runs:
    assign(block, i)
    # in the master, when worker i has exited and before slot i is reused:
    block.retire(i)
    block.count_restart()                  # when it is replaced
    stop()                                 # at exit

In a single process (the default) ``maitre.server`` does all this itself
when ``metrics_listen`` is set.
"""

import http.server
import mmap
import socket
import threading

from . import _maitre
from .adjustments import split_listen_entry

__all__ = [
    "CONTENT_TYPE",
    "Endpoint",
    "MetricsBlock",
    "assign",
    "assigned",
    "layout",
    "parse_listen",
    "start_endpoint",
]

#: The Prometheus text exposition format this module writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_layout = None


def layout():
    """``_maitre.metrics_layout()``: ``magic``, ``slot_size`` (bytes) and
    ``fields``, a list of ``(name, kind, byte offset, label)``."""
    global _layout
    if _layout is None:
        _layout = _maitre.metrics_layout()
    return _layout


def _signed(value):
    """A gauge cell: a wrapping u64 read as i64."""
    return value - (1 << 64) if value >= 1 << 63 else value


class MetricsBlock:
    """The retired totals and ``slots`` worker slots, in shared memory."""

    def __init__(self, slots=1):
        if slots < 1:
            raise ValueError("a metrics block needs at least one slot")
        lay = layout()
        self.slots = slots
        self.slot_size = lay["slot_size"]
        self._cells_per_slot = self.slot_size // 8
        self._fields = [(name, kind, offset // 8, label) for name, kind, offset, label in lay["fields"]]
        self._index = {(name, label): cell for name, _, cell, label in self._fields}
        # MAP_SHARED and anonymous: forked children write into the same pages.
        self._mm = mmap.mmap(-1, self.slot_size * (slots + 1))
        self._cells = memoryview(self._mm).cast("Q")
        self._lock = threading.Lock()
        for index in range(slots + 1):
            self._cells[self._base(index) + self._index[("magic", "")]] = lay["magic"]

    def _base(self, index):
        """First cell of slot ``index``: 0 is the retired slot, worker slot
        ``i`` is ``i + 1``."""
        return index * self._cells_per_slot

    def _check(self, i):
        if not 0 <= i < self.slots:
            raise IndexError(f"metrics slot {i} out of range (0..{self.slots - 1})")

    def slot(self, i):
        """Worker slot ``i`` as a writable memoryview (``hooks["metrics"]``)."""
        self._check(i)
        start = self._base(i + 1) * 8
        return memoryview(self._mm)[start : start + self.slot_size]

    def _cell(self, index, name, label=""):
        return self._base(index) + self._index[(name, label)]

    def pid(self, i):
        """The pid of the last process that attached a server to slot ``i``."""
        self._check(i)
        return self._cells[self._cell(i + 1, "pid")]

    def retire(self, i):
        """Fold worker slot ``i``'s counters into the retired totals and clear
        it, so that it can be reused and totals stay monotonic. Call it only
        once the process that counted into it has exited. Its gauges (in
        flight, queue, open connections) are dropped: they died with it."""
        self._check(i)
        base = self._base(i + 1)
        with self._lock:
            for name, kind, cell, _ in self._fields:
                if kind in ("counter", "bucket"):
                    self._cells[cell] += self._cells[base + cell]
                if kind != "header":
                    self._cells[base + cell] = 0
            self._cells[base + self._index[("pid", "")]] = 0
            self._cells[base + self._index[("generation", "")]] += 1

    def count_restart(self):
        """One more worker replaced (the master's counter)."""
        with self._lock:
            self._cells[self._cell(0, "worker_restarts")] += 1

    def totals(self):
        """Every metric summed over the retired totals and the live slots:
        ``{(name, label): value}``; gauges are signed."""
        out = {}
        for name, kind, cell, label in self._fields:
            if kind == "header":
                continue
            values = [self._cells[self._base(index) + cell] for index in range(self.slots + 1)]
            if kind == "gauge":
                out[(name, label)] = sum(_signed(v) for v in values)
            else:
                out[(name, label)] = sum(values)
        return out

    def render(self):
        """The Prometheus text exposition (format 0.0.4) of ``totals()``."""
        return render(self.totals())


# (field name, metric name, type, help); requests are labelled by status
# class and the duration is a histogram, both handled in render().
_SIMPLE = [
    ("in_flight", "maitre_requests_in_flight", "gauge", "Requests being run by the application."),
    ("queue_depth", "maitre_task_queue_depth", "gauge", "Requests waiting for a worker thread."),
    ("connections_open", "maitre_connections_open", "gauge", "Client connections open."),
    ("connections", "maitre_connections_total", "counter", "Client connections accepted."),
    ("bytes_received", "maitre_bytes_received_total", "counter", "Bytes read from clients."),
    ("bytes_sent", "maitre_bytes_sent_total", "counter", "Bytes written to clients."),
    (
        "worker_restarts",
        "maitre_worker_restarts_total",
        "counter",
        "Worker processes the master replaced.",
    ),
]


def _family(lines, name, kind, text):
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def render(totals):
    """``totals`` (as ``MetricsBlock.totals()`` gives them) as text."""
    lines = []
    _family(lines, "maitre_requests_total", "counter", "Requests answered, by status class.")
    for (name, label), value in totals.items():
        if name == "requests":
            lines.append(f'maitre_requests_total{{status="{label}"}} {value}')
    for field, metric, kind, text in _SIMPLE:
        _family(lines, metric, kind, text)
        lines.append(f"{metric} {totals[(field, '')]}")
    metric = "maitre_request_duration_seconds"
    _family(
        lines,
        metric,
        "histogram",
        "Time from a worker taking a request until the response is handed to the I/O thread.",
    )
    cumulative = 0
    for (name, label), value in totals.items():
        if name == "duration_bucket":
            cumulative += value
            lines.append(f'{metric}_bucket{{le="{label}"}} {cumulative}')
    lines.append(f"{metric}_sum {totals[('duration_sum_us', '')] / 1e6}")
    # The +Inf bucket, not the stored count: the two are separate cells, and
    # a scrape between their updates must still be a consistent histogram.
    lines.append(f"{metric}_count {cumulative}")
    return "\n".join(lines) + "\n"


# -- the slot of this process --------------------------------------------------------

_assigned = None


def assign(block, i):
    """In a worker process: servers count into ``block.slot(i)`` and do not
    serve an endpoint of their own (the master does). ``assign(None, 0)``
    undoes it."""
    global _assigned
    _assigned = None if block is None else (block, i)


def assigned():
    """``(block, i)`` set by ``assign``, or None."""
    return _assigned


# -- the endpoint -------------------------------------------------------------------


def parse_listen(listen):
    """``HOST:PORT`` (``[v6]:PORT``; ``*`` or an empty host for every IPv4
    address) as ``(family, host, port)``."""
    host, port = split_listen_entry(listen, 0)
    host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, host, int(port)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "maitre-metrics"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.server.block.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # scrapes are not worth a line each


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Endpoint:
    """The metrics endpoint serving from a daemon thread. Call it (or
    ``stop()``) to stop; ``address`` is where it listens (host, port)."""

    def __init__(self, listen, block):
        family, host, port = parse_listen(listen)
        server_class = type("_MetricsServer", (_HTTPServer,), {"address_family": family})
        self._server = server_class((host, port), _Handler)
        self._server.block = block
        self.address = self._server.server_address[:2]
        self._stopped = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="maitre-metrics",
            daemon=True,
        )
        self._thread.start()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    __call__ = stop


def start_endpoint(listen, block):
    """Serve ``block`` at ``http://listen/metrics`` (and ``/``); returns the
    ``Endpoint``, a callable that stops it."""
    return Endpoint(listen, block)
