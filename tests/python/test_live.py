"""End to end through the native server (skipped until it exists)."""

import http.client
import os
import socket
import threading

import pytest

from conftest import needs_unix
from maitre import _maitre, create_server
from maitre.demo import app

pytestmark = pytest.mark.skipif(
    not hasattr(_maitre, "Server"), reason="maitre._maitre.Server not built yet"
)


class Running:
    """A server running in a thread; closed (and joined) on exit."""

    def __init__(self, **kw):
        self.server = create_server(app, **kw)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.server.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def test_tcp_hello_and_echo():
    with Running(listen="127.0.0.1:0", threads=2) as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.effective_port), timeout=10)
        status, body = request(conn, "GET", "/")
        assert status == 200
        assert b"Hello from maitre!" in body
        assert f"SERVER_PORT: {server.effective_port}".encode() in body
        status, body = request(conn, "POST", "/echo", b"payload")
        assert (status, body) == (200, b"payload")
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


@needs_unix
def test_unix_socket(short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    with Running(unix_socket=path):
        conn = UnixHTTPConnection(path)
        status, body = request(conn, "GET", "/")
        assert status == 200
        assert f"SERVER_PORT: {path}".encode() in body
        conn.close()


def test_close_before_run_returns_at_once():
    server = create_server(app, listen="127.0.0.1:0")
    server.close()
    server.run()
