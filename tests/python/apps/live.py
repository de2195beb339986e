"""The harness of the real-socket tests.

* ``LiveServer``: ``maitre.create_server(...)`` with ``run()`` in a thread;
  ``stop()`` calls ``close()`` and checks that ``run()`` really returned.
* ``live``: a pytest fixture making ``LiveServer``s, stopped at teardown.
* ``Client``: a raw socket with a buffer, reading HTTP/1.x responses one by
  one (pipelining), with every wait guarded by ``GUARD`` seconds (a failure
  guard, never a delay: reads return as soon as bytes arrive).
* ``Process``: ``maitre-serve`` (or ``python -m maitre``) in a subprocess,
  with its stderr read line by line as it comes.

Test modules import the fixture: ``from apps.live import live  # noqa``.
"""

import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from maitre import create_server

#: Seconds: the longest any single wait may take before the test fails.
GUARD = 10.0

#: tests/python: the directory ``maitre-serve`` runs in, so ``apps`` imports.
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LiveServer:
    """A maitre server running in a thread of this process."""

    def __init__(self, app, **kw):
        if not {"listen", "host", "port", "unix_socket", "sockets"} & set(kw):
            kw["listen"] = "127.0.0.1:0"
        self.server = create_server(app, **kw)
        self.run_error = None
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, name="maitre-live", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.server.run()
        except BaseException as exc:  # reported by stop()
            self.run_error = exc
        finally:
            self.returned.set()

    @property
    def port(self):
        return int(self.server.effective_port)

    @property
    def address(self):
        """Where a client connects: (host, port) or a Unix socket path."""
        if self.server.adj.unix_socket:
            return self.server.adj.unix_socket
        return (self.server.effective_host, self.port)

    def connect(self, address=None):
        return connect(address or self.address)

    def stop(self):
        """close(), then run() must return; it must not have raised."""
        self.server.close()
        assert self.returned.wait(GUARD), "run() did not return after close()"
        self.thread.join(GUARD)
        assert not self.thread.is_alive()
        assert self.run_error is None, f"run() raised {self.run_error!r}"


def connect(address):
    """A ``Client`` connected to ``(host, port)`` (IPv4 or IPv6) or to a
    Unix socket path."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    if not isinstance(address, str) and ":" in address[0]:
        family = socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(GUARD)
    sock.connect(address)
    return Client(sock)


@pytest.fixture
def live():
    """``live(app, **settings)`` starts a server; all are stopped (and their
    run() checked to return) when the test ends."""
    started = []

    def start(app, **kw):
        server = LiveServer(app, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Response:
    """One parsed HTTP response."""

    def __init__(self, head, body, chunks=None):
        self.raw_head = head
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = self.status_line.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers.append((name, value.strip()))
        self.body = body
        #: The sizes of the chunks on the wire, for a chunked body.
        self.chunks = chunks

    def header(self, name):
        """The value of the one header ``name`` (case-insensitive), or None;
        fails if it appears more than once."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @property
    def names(self):
        return [n for n, _ in self.headers]

    def __repr__(self):
        return f"<Response {self.status_line!r} {self.headers!r} {self.body[:200]!r}>"


class Client:
    """A raw connection; reads go through one buffer so that pipelined
    responses can be read one after another."""

    def __init__(self, sock):
        self.sock = sock
        self._buf = bytearray()

    @property
    def buf(self):
        """Bytes received and not read yet."""
        return bytes(self._buf)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout=GUARD):
        """Wait for bytes (up to ``timeout``); False at EOF."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise TimeoutError(f"nothing from the server in {timeout} s; have {self.buf!r}")
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self._buf += data
        return True

    def _take(self, n):
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_until(self, marker):
        start = 0
        while True:
            found = self._buf.find(marker, start)
            if found >= 0:
                return self._take(found + len(marker))
            start = max(0, len(self._buf) - len(marker) + 1)
            if not self._fill():
                raise EOFError(f"closed before {marker!r}; have {self.buf!r}")

    def read_exact(self, n):
        while len(self._buf) < n:
            if not self._fill():
                raise EOFError(f"closed after {len(self._buf)} of {n} bytes")
        return self._take(n)

    def read_to_eof(self):
        while self._fill():
            pass
        return self._take(len(self._buf))

    def read_response(self, method="GET"):
        """One response; the body framed by Content-Length, chunked coding or
        the end of the connection."""
        head = self.read_until(b"\r\n\r\n")
        response = Response(head, b"")
        no_body = method == "HEAD" or response.status in (204, 304) or response.status < 200
        if no_body:
            return response
        te = response.header("Transfer-Encoding")
        cl = response.header("Content-Length")
        if te is not None:
            assert te.lower() == "chunked", te
            response.body, response.chunks = self._read_chunked()
        elif cl is not None:
            response.body = self.read_exact(int(cl))
        else:
            response.body = self.read_to_eof()
        return response

    def _read_chunked(self):
        parts, sizes = [], []
        while True:
            size = int(self.read_until(b"\r\n")[:-2], 16)
            sizes.append(size)
            if size == 0:
                assert self.read_exact(2) == b"\r\n"
                return b"".join(parts), sizes
            parts.append(self.read_exact(size))
            assert self.read_exact(2) == b"\r\n"

    def request(self, method="GET", path="/", headers=(), body=b"", version="HTTP/1.1"):
        """Send one request (Host added unless given) and read its response."""
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(method)

    def closed_by_server(self, timeout=GUARD):
        """True once the server closed the connection with nothing more sent
        (False if bytes arrive; fails if nothing happens within ``timeout``)."""
        if self._buf:
            return False
        return not self._fill(timeout)

    def silent_for(self, seconds):
        """True if the server sends nothing and keeps the connection open
        for ``seconds``: the window of a negative check."""
        ready, _, _ = select.select([self.sock], [], [], seconds)
        return not ready and not self._buf


def build_request(method="GET", path="/", headers=(), body=b"", version="HTTP/1.1"):
    headers = list(headers)
    if version == "HTTP/1.1" and not any(n.lower() == "host" for n, _ in headers):
        headers.insert(0, ("Host", "example.com"))
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" if version else f"{method} {path}\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def chunked(*parts):
    """A chunked request body made of ``parts``."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


def wait_for(predicate, timeout=GUARD, interval=0.005):
    """Poll ``predicate`` until true (True) or ``timeout`` (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVING_RE = re.compile(r"Serving on http://(\S+):(\d+)$")


class Process:
    """``maitre-serve ARGS`` (or another command) in a subprocess, in
    ``tests/python``; stderr lines are collected by a thread as they come."""

    def __init__(self, argv, env=None):
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            cwd=TESTS_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
        )
        self.lines = queue.Queue()
        self.stderr = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def maitre_serve(cls, *args):
        exe = os.path.join(os.path.dirname(sys.executable), "maitre-serve")
        return cls([exe, *args])

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, pattern, timeout=GUARD):
        """The first stderr line matching ``pattern`` (a regex), as a match."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise TimeoutError(f"no line like {pattern!r}; got {self.stderr!r}") from None
            if line is None:
                raise EOFError(f"stderr ended before {pattern!r}; got {self.stderr!r}")
            self.stderr.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_serving(self):
        """(host, port) of the first "Serving on" line."""
        match = self.wait_line(SERVING_RE.pattern)
        return match.group(1), int(match.group(2))

    def rest(self):
        """Every stderr line, once the process has ended."""
        while True:
            line = self.lines.get(timeout=GUARD)
            if line is None:
                self.lines.put(None)
                return self.stderr
            self.stderr.append(line)

    def stop(self, sig):
        self.proc.send_signal(sig)
        return self.proc.wait(GUARD)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(GUARD)
        self._reader.join(GUARD)
        self.proc.stdout.close()
        self.proc.stderr.close()
