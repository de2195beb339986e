"""Listeners for real: a Unix socket and its permissions, several TCP
addresses (IPv4 and IPv6) served by one server."""

import json
import logging
import os
import socket
import stat
import time

import pytest

from apps.live import GUARD, build_request, live  # noqa: F401
from apps.probe import Gate
from apps.probe import app as probe_app
from conftest import needs_ipv6, needs_unix
from maitre.server import MultiSocketServer


@needs_unix
@pytest.mark.parametrize(
    "perms,mode",
    [(None, 0o600), ("660", 0o660), ("0o640", 0o640), (0o604, 0o604), ("777", 0o777)],
)
def test_unix_socket_mode_and_request(live, short_tmp, perms, mode):
    path = os.path.join(short_tmp, "m.sock")
    kw = {} if perms is None else {"unix_socket_perms": perms}
    server = live(probe_app, unix_socket=path, **kw)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode
    with server.connect(path) as client:
        response = client.request("POST", "/", [], b"through unix")
    environ = json.loads(response.body)
    assert environ["body"] == "through unix"
    assert environ["REMOTE_ADDR"] == "localhost"
    assert environ["REMOTE_HOST"] == "localhost"
    assert environ["REMOTE_PORT"] == "None"  # Waitress's quirk, kept (Q9)
    assert environ["SERVER_PORT"] == path  # the path (Q9)
    assert environ["SERVER_NAME"] == "waitress.invalid"


@needs_unix
def test_unix_socket_keep_alive_and_print_listen(live, short_tmp, caplog):
    path = os.path.join(short_tmp, "k.sock")
    server = live(probe_app, unix_socket=path)
    with caplog.at_level(logging.INFO, logger="maitre"):
        server.server.print_listen("Serving on http://{}:{}")
    assert f"Serving on http://unix:{path}" in caplog.messages
    with server.connect(path) as client:
        for i in range(3):
            body = f"n{i}".encode()
            assert client.request("POST", "/echo", [], body).body == body


@needs_unix
def test_unix_socket_trusted_proxy_is_localhost(live, short_tmp):
    path = os.path.join(short_tmp, "p.sock")
    server = live(
        probe_app,
        unix_socket=path,
        trusted_proxy="localhost",
        trusted_proxy_headers="x-forwarded-for",
    )
    with server.connect(path) as client:
        response = client.request("GET", "/", [("X-Forwarded-For", "203.0.113.9")])
    assert json.loads(response.body)["REMOTE_ADDR"] == "203.0.113.9"


@needs_ipv6
def test_two_listen_addresses_ipv4_and_ipv6(live, caplog):
    server = live(probe_app, listen="127.0.0.1:0 [::1]:0")
    multi = server.server
    assert isinstance(multi, MultiSocketServer)
    (host4, port4), (host6, port6) = multi.effective_listen
    assert (host4, host6) == ("127.0.0.1", "::1")
    assert int(port4) and int(port6)
    with caplog.at_level(logging.INFO, logger="maitre"):
        multi.print_listen("Serving on http://{}:{}")
    assert f"Serving on http://127.0.0.1:{port4}" in caplog.messages
    assert f"Serving on http://[::1]:{port6}" in caplog.messages
    for host, port, remote in ((host4, port4, "127.0.0.1"), (host6, port6, "::1")):
        with server.connect((host, int(port))) as client:
            for _ in range(2):  # keep-alive on each
                environ = json.loads(client.request("GET", "/").body)
                assert environ["SERVER_PORT"] == str(port)
                assert environ["REMOTE_ADDR"] == remote


def test_two_ipv4_listeners_share_one_pool(live):
    gate = Gate()
    server = live(gate, listen="127.0.0.1:0 127.0.0.1:0", threads=2)
    (h1, p1), (h2, p2) = server.server.effective_listen
    assert p1 != p2
    one, two = server.connect((h1, int(p1))), server.connect((h2, int(p2)))
    try:
        one.send(build_request())
        two.send(build_request())
        assert gate.wait_active(2, GUARD)
        gate.release()
        assert one.read_response().body == b"done"
        assert two.read_response().body == b"done"
    finally:
        gate.release()
        one.close()
        two.close()
    assert len(gate.threads) == 2


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_a_client_silent_past_the_deferred_accept_is_still_served(live):
    """The listener defers accepting a connection until its first bytes
    arrive (or about a second has passed): a client that connects and
    waits longer than that before sending is served like any other, and
    one that sends at once is served on the same server meanwhile. With a
    single place, an accepted silent client would be the connection the
    quick one replaces (closed): deferred, it is not in the way."""
    server = live(probe_app, connection_limit=1)
    with server.connect() as slow:
        with server.connect() as quick:
            assert quick.request().status == 200
        time.sleep(1.5)  # the client's own pause, longer than the deferral
        response = slow.request("GET", "/late")
    assert response.status == 200
    assert json.loads(response.body)["PATH_INFO"] == "/late"
