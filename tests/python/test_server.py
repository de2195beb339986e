"""create_server: binding, the server objects, print_listen."""

import errno
import logging
import os
import socket
import stat

import pytest

from conftest import needs_ipv6, needs_unix
from maitre import server as server_mod
from maitre.server import (
    MultiSocketServer,
    TcpWSGIServer,
    UnixWSGIServer,
    WSGIServer,
    create_server,
)


def app(environ, start_response):  # pragma: no cover - never called here
    return []


@pytest.fixture
def servers():
    """Servers made by a test, closed afterwards."""
    made = []
    yield made
    for server in made:
        server.close()


def make(servers, application=app, **kw):
    server = create_server(application, **kw)
    servers.append(server)
    return server


def connect(family, address):
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(5)
    try:
        client.connect(address)
    finally:
        client.close()


def test_none_app_is_refused():
    with pytest.raises(ValueError) as info:
        create_server(None, listen="127.0.0.1:0")
    assert str(info.value) == (
        'The "app" passed to ``create_server`` was ``None``.  You forgot '
        "to return a WSGI app within your application."
    )


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="^Unknown adjustment 'nope'$"):
        create_server(app, nope=1)


def test_single_tcp_listener(servers):
    server = make(servers, host="127.0.0.1", port=0, threads=2)
    assert isinstance(server, TcpWSGIServer)
    assert server.application is app
    assert server.adj.threads == 2
    assert server.effective_host == "127.0.0.1"
    port = server.socket.getsockname()[1]
    assert port != 0
    assert server.effective_port == str(port)


def test_tcp_listener_is_listening_non_blocking_reusable(servers):
    server = make(servers, listen="127.0.0.1:0")
    sock = server.socket
    assert sock.getblocking() is False
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    connect(socket.AF_INET, ("127.0.0.1", int(server.effective_port)))
    assert server.accepting is True


def test_own_tcp_listener_passes_on_nodelay_and_defers_accept(servers):
    sock = make(servers, listen="127.0.0.1:0").socket
    # Accepted sockets inherit TCP_NODELAY from it (Linux): one system call
    # fewer per connection than setting it on each.
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0


def test_prebound_tcp_socket_keeps_its_options(servers):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    make(servers, sockets=[sock])
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0


def test_backlog_reaches_listen(servers, monkeypatch):
    seen = []
    real = TcpWSGIServer.accept_connections

    def spy(self):
        seen.append(self.adj.backlog)
        real(self)

    monkeypatch.setattr(TcpWSGIServer, "accept_connections", spy)
    make(servers, listen="127.0.0.1:0", backlog="7")
    assert seen == [7]


def test_start_false_binds_without_listening(servers):
    server = make(servers, listen="127.0.0.1:0", _start=False)
    assert server.accepting is False
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    assert server.effective_port != "0"


@needs_ipv6
def test_ipv6_listener_is_v6_only(servers):
    # The wildcard: Linux makes a socket bound to ::1 v6-only by itself.
    server = make(servers, listen="[::]:0")
    assert server.effective_host == "::"
    assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


@needs_ipv6
def test_two_listeners_make_a_multi_socket_server(servers, caplog):
    server = make(servers, listen="127.0.0.1:0 [::1]:0")
    assert isinstance(server, MultiSocketServer)
    assert server.application is app
    assert server.adj.listen[1][0] == socket.AF_INET6
    (host4, port4), (host6, port6) = server.effective_listen
    assert (host4, host6) == ("127.0.0.1", "::1")
    assert port4.isdigit() and port6.isdigit() and "0" not in (port4, port6)
    connect(socket.AF_INET, ("127.0.0.1", int(port4)))
    connect(socket.AF_INET6, ("::1", int(port6)))

    caplog.set_level(logging.INFO, logger="maitre")
    server.print_listen("Serving on http://{}:{}")
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        ("maitre", logging.INFO, f"Serving on http://127.0.0.1:{port4}"),
        ("maitre", logging.INFO, f"Serving on http://[::1]:{port6}"),
    ]


@needs_ipv6
def test_single_ipv6_listener_is_not_bracketed(servers, caplog):
    # Waitress's quirk: brackets only in the multi-socket case.
    server = make(servers, host="::1", port=0)
    caplog.set_level(logging.INFO, logger="maitre")
    server.print_listen("Serving on http://{}:{}")
    assert caplog.messages == [f"Serving on http://::1:{server.effective_port}"]


def test_single_print_listen(servers, caplog):
    server = make(servers, listen="127.0.0.1:0")
    caplog.set_level(logging.INFO, logger="maitre")
    server.print_listen("at {}, port {}")
    assert caplog.record_tuples == [
        ("maitre", logging.INFO, f"at 127.0.0.1, port {server.effective_port}")
    ]


def test_listeners_registered_in_map(servers):
    registry = {}
    server = make(servers, listen="127.0.0.1:0 127.0.0.1:0", map=registry)
    assert server.map is registry
    assert sorted(registry) == sorted(s.socket.fileno() for s in server._servers)


def test_failed_bind_raises_and_releases_earlier_listeners(servers):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    registry = {}
    try:
        with pytest.raises(OSError) as info:
            create_server(app, listen=f"127.0.0.1:0 127.0.0.1:{port}", map=registry)
        assert info.value.errno == errno.EADDRINUSE
        (first,) = registry.values()
        assert first.socket.fileno() == -1
    finally:
        busy.close()


def test_close_before_run_closes_sockets(servers):
    server = make(servers, listen="127.0.0.1:0 127.0.0.1:0")
    inner = [s.socket for s in server._servers]
    server.close()
    assert [s.fileno() for s in inner] == [-1, -1]
    server.close()  # idempotent


def test_prebound_tcp_socket_is_not_rebound(servers):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make(servers, sockets=[sock])
    assert isinstance(server, TcpWSGIServer)
    assert server.socket is sock
    assert server.effective_port == str(port)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert sock.getblocking() is False


def test_two_prebound_tcp_sockets(servers):
    socks = [socket.socket(), socket.socket()]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    server = make(servers, sockets=socks)
    assert isinstance(server, MultiSocketServer)
    assert server.effective_listen == [
        ("127.0.0.1", str(sock.getsockname()[1])) for sock in socks
    ]


def test_prebound_sockets_ignore_default_listen(servers, monkeypatch):
    bound = []
    real = TcpWSGIServer.bind_server_socket
    monkeypatch.setattr(
        TcpWSGIServer, "bind_server_socket", lambda self: (bound.append(1), real(self))
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    make(servers, sockets=[sock])
    assert bound == []


def test_wsgiserver_alias_and_direct_construction():
    assert WSGIServer is TcpWSGIServer
    server = WSGIServer(app, _start=False, host="127.0.0.1", port=0)
    try:
        assert server.adj.host == "127.0.0.1"
        assert server.effective_host == "127.0.0.1"
    finally:
        server.close()


# -- Unix sockets -------------------------------------------------------------


def unix_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@needs_unix
@pytest.mark.parametrize("perms", ["660", 0o660])
def test_unix_socket_perms(servers, short_tmp, perms):
    path = os.path.join(short_tmp, "s.sock")
    server = make(servers, unix_socket=path, unix_socket_perms=perms)
    assert isinstance(server, UnixWSGIServer)
    assert unix_mode(path) == 0o660


@needs_unix
def test_unix_socket_default_perms(servers, short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    make(servers, unix_socket=path)
    assert unix_mode(path) == 0o600


@needs_unix
def test_unix_socket_effective_address_and_print_listen(servers, short_tmp, caplog):
    path = os.path.join(short_tmp, "s.sock")
    server = make(servers, unix_socket=path)
    assert (server.effective_host, server.effective_port) == ("unix", path)
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    connect(socket.AF_UNIX, path)
    caplog.set_level(logging.INFO, logger="maitre")
    server.print_listen("Serving on http://{}:{}")
    assert caplog.messages == [f"Serving on http://unix:{path}"]


@needs_unix
def test_unix_socket_replaces_stale_socket_file(servers, short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    server = make(servers, unix_socket=path)
    connect(socket.AF_UNIX, path)
    assert server.effective_port == path


@needs_unix
def test_unix_socket_leaves_other_files_alone(short_tmp):
    path = os.path.join(short_tmp, "not-a-socket")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(OSError) as info:
        create_server(app, unix_socket=path)
    assert info.value.errno == errno.EADDRINUSE
    with open(path) as f:
        assert f.read() == "keep me"


@needs_unix
def test_unix_socket_file_kept_after_close(servers, short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    server = make(servers, unix_socket=path)
    server.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_empty_unix_socket_means_tcp(servers, monkeypatch):
    # unix_socket="" is falsy: the default listen entry is used instead.
    wanted = []

    def bind_any_port(self):
        wanted.append(self.sockinfo[3])
        self.socket.bind(("127.0.0.1", 0))

    monkeypatch.setattr(TcpWSGIServer, "bind_server_socket", bind_any_port)
    server = make(servers, unix_socket="")
    assert isinstance(server, TcpWSGIServer)
    assert wanted == [("0.0.0.0", 8080)]


@needs_unix
def test_two_prebound_unix_sockets(servers, short_tmp):
    paths = [os.path.join(short_tmp, f"{n}.sock") for n in "ab"]
    socks = []
    for path in paths:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        socks.append(sock)
    server = make(servers, sockets=socks)
    assert isinstance(server, MultiSocketServer)
    assert all(isinstance(s, UnixWSGIServer) for s in server._servers)
    assert server.effective_listen == [("unix", p) for p in paths]


def test_nothing_started_at_import():
    import subprocess
    import sys

    code = (
        "import threading, maitre, maitre.server, maitre.runner, maitre.demo, "
        "maitre.filewrapper, maitre.errors, maitre.adjustments\n"
        "import os\n"
        "print(threading.active_count())\n"
        "fds = os.listdir('/proc/self/fd') if os.path.isdir('/proc/self/fd') else []\n"
        "print(sum(os.readlink('/proc/self/fd/' + f).startswith('socket:') "
        "for f in fds if os.path.exists('/proc/self/fd/' + f)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["1", "0"]


def test_module_logger_name():
    assert server_mod.logger.name == "maitre"
