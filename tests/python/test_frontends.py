"""Every setting through each front door: serve() (create_server under it),
the maitre-serve command line, and a PasteDeploy ini file; with Waitress's
casts and errors. The native server is faked here (see conftest's
``fake_native``): what is checked is what reaches it and the cast values;
test_settings_live.py checks the effects on a real server."""

import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import warnings

import pytest

import maitre
from apps import probe
from apps.live import GUARD, TESTS_DIR, Process, connect, wait_for
from conftest import needs_unix
from maitre import _maitre, runner, serve
from maitre import create_server as real_create_server

BASE = {"listen": "127.0.0.1:0"}

# name -> (other settings it needs (None: no listen), string value, cast
# value, a native Python value for serve()). Every setting of the native
# table but ``sockets`` (objects only, tested below) is here.
SETTINGS = {
    "host": ({"port": "0"}, "127.0.0.1", "127.0.0.1", "127.0.0.1"),
    "port": ({"host": "127.0.0.1"}, "0", 0, 0),
    "ipv4": (BASE, "yes", True, True),
    "ipv6": (BASE, "no", False, False),
    "listen": (None, "127.0.0.1:0 127.0.0.1:0", ["127.0.0.1:0", "127.0.0.1:0"],
               ["127.0.0.1:0", "127.0.0.1:0"]),
    "threads": (BASE, "3", 3, 3),
    "trusted_proxy": (BASE, "10.0.0.1", "10.0.0.1", "10.0.0.1"),
    "trusted_proxy_count": (dict(BASE, trusted_proxy="*"), "2", 2, 2),
    "trusted_proxy_headers": (
        dict(BASE, trusted_proxy="*"),
        "X-Forwarded-For x-forwarded-host",
        {"x-forwarded-for", "x-forwarded-host"},
        {"x-forwarded-for", "x-forwarded-host"},
    ),
    "log_untrusted_proxy_headers": (BASE, "on", True, True),
    "clear_untrusted_proxy_headers": (BASE, "off", False, False),
    "url_scheme": (BASE, "https", "https", "https"),
    "url_prefix": (BASE, "//app/", "/app", "/app/"),
    "backlog": (BASE, "64", 64, 64),
    "recv_bytes": (BASE, "4096", 4096, 4096),
    "send_bytes": (BASE, "2", 2, 2),
    "outbuf_overflow": (BASE, "100000", 100000, 100000),
    "outbuf_high_watermark": (BASE, "200000", 200000, 200000),
    "inbuf_overflow": (BASE, "300000", 300000, 300000),
    "connection_limit": (BASE, "50", 50, 50),
    "cleanup_interval": (BASE, "7", 7, 7),
    "channel_timeout": (BASE, "9", 9, 9),
    "header_timeout": (BASE, "11", 11, 11),
    "log_socket_errors": (BASE, "false", False, False),
    "max_request_header_size": (BASE, "5000", 5000, 5000),
    "max_request_body_size": (BASE, "6000", 6000, 6000),
    "expose_tracebacks": (BASE, "true", True, True),
    "ident": (BASE, "Acme/2", "Acme/2", "Acme/2"),
    "asyncore_loop_timeout": (BASE, "3", 3, 3),
    "asyncore_use_poll": (BASE, "t", True, True),
    "unix_socket": (None, "UNIX", "UNIX", "UNIX"),
    "unix_socket_perms": ({"unix_socket": "UNIX"}, "640", 0o640, 0o640),
    "channel_request_lookahead": (BASE, "2", 2, 2),
    "server_name": (BASE, "srv.example", "srv.example", "srv.example"),
    # maitre's own settings (operations).
    "graceful_timeout": (BASE, "4", 4, 4),
    "request_timeout": (BASE, "6", 6, 6),
    "workers": (BASE, "1", 1, 1),
    "max_requests": (BASE, "0", 0, 0),
    "max_requests_jitter": (BASE, "5", 5, 5),
    "access_log": (BASE, "-", "-", "-"),
    "access_log_format": (BASE, "json", "json", "json"),
    "metrics_listen": (BASE, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
}

BOOLS = {row[0] for row in _maitre.settings_table() if row[1] == "bool"}


def test_table_covers_every_setting():
    names = {row[0] for row in _maitre.settings_table()}
    assert set(SETTINGS) == names - {"sockets"}


@pytest.fixture
def unix_path(short_tmp):
    return os.path.join(short_tmp, "f.sock")


def resolve(value, unix_path):
    """Replace the UNIX placeholder by a real path."""
    if value == "UNIX":
        return unix_path
    if isinstance(value, dict):
        return {k: resolve(v, unix_path) for k, v in value.items()}
    return value


def check_cast(server, name, expected):
    adj = server.adj
    if name == "listen":
        assert len(adj.listen) == 2
        assert [sockaddr[:1] for (_, _, _, sockaddr) in adj.listen] == [("127.0.0.1",)] * 2
    elif isinstance(expected, set):
        assert set(getattr(adj, name)) == expected
    else:
        assert getattr(adj, name) == expected


class Captured(list):
    """``create_server`` that remembers what it made."""

    def __call__(self, app, **kw):
        server = real_create_server(app, **kw)
        self.append(server)
        return server


@pytest.fixture
def captured(monkeypatch):
    made = Captured()
    # serve() looks create_server up in the maitre package at each call.
    monkeypatch.setattr(maitre, "create_server", made)
    yield made
    for server in made:
        server.close()


def cases():
    return [pytest.param(name, id=name) for name in sorted(SETTINGS)]


# -- serve() -----------------------------------------------------------------------


@pytest.mark.parametrize("name", cases())
@pytest.mark.parametrize("form", ["string", "native"])
def test_serve_accepts_every_setting(name, form, fake_native, clean_signals, captured, unix_path):
    needs, text, expected, native = SETTINGS[name]
    value = resolve(text if form == "string" else native, unix_path)
    kw = dict(resolve(needs or {}, unix_path), **{name: value})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert serve(probe.app, _quiet=True, **kw) is None
    (server,) = captured
    check_cast(server, name, resolve(expected, unix_path))
    (native_server,) = fake_native
    assert native_server.app is probe.app
    assert (name, value) in native_server.pairs  # as given: the native side casts too


def test_serve_sockets(fake_native, clean_signals, captured):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    serve(probe.app, _quiet=True, sockets=[sock, "not a socket"])
    (server,) = captured
    assert server.adj.sockets == [sock]
    ((_, kind, host, port_text),) = fake_native[0].listeners
    assert (kind, host, port_text) == ("tcp", "127.0.0.1", str(port))
    assert all(name != "sockets" for name, _ in fake_native[0].pairs)  # never sent to Rust


SERVE_ERRORS = [
    ({"threads": "abc"}, ValueError, "invalid literal for int() with base 10: 'abc'"),
    ({"bogus": "1"}, ValueError, "Unknown adjustment 'bogus'"),
    ({"unix_socket": "/tmp/x.sock", "unix_socket_perms": "9"}, ValueError,
     "invalid literal for int() with base 8: '9'"),
    ({"trusted_proxy_headers": "x-forwarded-for"}, ValueError,
     "trusted_proxy_headers has no meaning without setting trusted_proxy"),
    ({"listen": "127.0.0.1:nope"}, ValueError, "Invalid host/port specified."),
    ({"port": "1", "listen": "127.0.0.1:0"}, ValueError,
     "host or port may not be set if listen is set."),
]


@pytest.mark.parametrize("kw,error,message", SERVE_ERRORS)
def test_serve_errors(kw, error, message, fake_native):
    # Exactly Waitress's text (a cast error also carries a note naming the setting).
    with pytest.raises(error) as caught:
        serve(probe.app, _quiet=True, **kw)
    assert str(caught.value) == message
    assert list(fake_native) == []


@pytest.mark.parametrize(
    "kw,error,message",
    [
        ({"threads": "abc"}, ValueError, "invalid literal for int() with base 10: 'abc'"),
        ({"unix_socket": "/tmp/x.sock", "unix_socket_perms": "9"}, ValueError,
         "invalid literal for int() with base 8: '9'"),
        ({"threads": None}, TypeError,
         "int() argument must be a string, a bytes-like object or a real number, "
         "not 'NoneType'"),
    ],
)
def test_serve_cast_error_is_exactly_waitress_message(kw, error, message, fake_native):
    with pytest.raises(error) as info:
        serve(probe.app, _quiet=True, **kw)
    assert str(info.value) == message


# -- maitre-serve (in this process, with the real serve() and a fake run) ---------------


@pytest.fixture
def cli_env(monkeypatch):
    """runner.run() changes sys.path and the maitre logger level: undo."""
    logger = logging.getLogger("maitre")
    level = logger.level
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(TESTS_DIR)
    yield
    logger.setLevel(level)


def cli_args(name, text, needs):
    args = []
    for key, value in list((needs or {}).items()) + [(name, text)]:
        option = "--" + key.replace("_", "-")
        if key in BOOLS:
            truthy = value.strip().lower() in ("t", "true", "y", "yes", "on", "1")
            args.append(option if truthy else "--no-" + option[2:])
        else:
            args.append(f"{option}={value}")
    return args


@pytest.mark.parametrize("name", cases())
def test_cli_accepts_every_setting(name, fake_native, clean_signals, captured, cli_env, unix_path):
    needs, text, expected, _ = SETTINGS[name]
    args = cli_args(name, resolve(text, unix_path), resolve(needs, unix_path))

    def quiet_serve(app, **kw):
        return serve(app, _quiet=True, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert runner.run(["maitre-serve", *args, "apps.probe:app"], _serve=quiet_serve) == 0
    (server,) = captured
    check_cast(server, name, resolve(expected, unix_path))
    assert fake_native[0].app is probe.app


# -- maitre-serve (subprocess) ------------------------------------------------------


def maitre_serve(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "maitre-serve")
    return subprocess.run(
        [exe, *args], cwd=TESTS_DIR, capture_output=True, text=True, timeout=60
    )


def test_cli_help_lists_every_setting():
    done = maitre_serve("--help")
    assert done.returncode == 0
    assert done.stderr == ""
    for name, kind, default, text in _maitre.settings_table():
        option = "--" + name.replace("_", "-")
        if kind == "sockets":
            assert option not in done.stdout
        elif kind == "bool":
            assert f"    {option}, --no-{option[2:]}\n" in done.stdout
        else:
            assert re.search(rf"^    {re.escape(option)}=[A-Z:]+\n", done.stdout, re.M), name


CLI_ERRORS = [
    # A bad value is an uncaught error (Waitress 3.0.2): traceback, status 1.
    (["--threads=abc"], "ValueError: invalid literal for int() with base 10: 'abc'"),
    (["--port=http", "--host=127.0.0.1"], "ValueError: invalid literal for int() with base 10: 'http'"),
    (["--unix-socket=/tmp/mt-never.sock", "--unix-socket-perms=9"],
     "ValueError: invalid literal for int() with base 8: '9'"),
    (["--listen=127.0.0.1:0", "--trusted-proxy-headers=x-forwarded-for"],
     "ValueError: trusted_proxy_headers has no meaning without setting trusted_proxy"),
    (["--listen=127.0.0.1:0", "--trusted-proxy=*", "--trusted-proxy-headers=bogus"],
     "ValueError: Received unknown trusted_proxy_headers value (bogus) expected one of"),
    (["--listen=127.0.0.1:nope"], "ValueError: Invalid host/port specified."),
    (["--port=1", "--listen=127.0.0.1:0"],
     "ValueError: host or port may not be set if listen is set."),
]


@pytest.mark.parametrize("args,last_line", CLI_ERRORS)
def test_cli_bad_value_is_waitress_error(args, last_line):
    done = maitre_serve(*args, "apps.probe:app")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    exc_type, _, message = last_line.partition(": ")
    # Waitress's exception line (a cast error adds a note line after it).
    error = [line for line in lines if line.startswith(exc_type + ": ")]
    assert len(error) == 1 and message in error[0]


def test_cli_bad_value_error_line_is_exactly_waitress():
    done = maitre_serve("--threads=abc", "apps.probe:app")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    # Waitress's exact exception line, then (Python 3.11+) a note naming the setting.
    error = [line for line in lines if line.startswith("ValueError: ")]
    assert error == ["ValueError: invalid literal for int() with base 10: 'abc'"]
    assert lines[-1] == 'while reading the setting "threads"'


@pytest.mark.parametrize(
    "args,message",
    [
        (["--bogus", "apps.probe:app"], "option --bogus not recognized"),
        (["--threads"], "option --threads requires argument"),
        (["--expose-tracebacks=yes", "apps.probe:app"],
         "option --expose-tracebacks must not have an argument"),
        (["--t=1", "apps.probe:app"], "option --t not a unique prefix"),
    ],
)
def test_cli_bad_option_is_usage_error(args, message):
    done = maitre_serve(*args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"Error: {message}\n\nUsage:\n")


# -- PasteDeploy ---------------------------------------------------------------------


def write_ini(tmp_path, settings, app="call:apps.probe:app_factory"):
    lines = ["[app:main]", f"use = {app}", "", "[server:main]", "use = egg:maitre#main"]
    lines += [f"{name} = {value}" for name, value in settings.items()]
    path = tmp_path / "maitre.ini"
    path.write_text("\n".join(lines) + "\n")
    return f"config:{path}"


@pytest.mark.parametrize("name", cases())
def test_paste_accepts_every_setting(name, tmp_path, fake_native, clean_signals, captured,
                                     unix_path):
    from paste.deploy import loadapp, loadserver

    needs, text, expected, _ = SETTINGS[name]
    uri = write_ini(tmp_path, dict(resolve(needs or {}, unix_path),
                                   **{name: resolve(text, unix_path)}))
    app = loadapp(uri, relative_to=TESTS_DIR)
    assert app is probe.app
    runner_ = loadserver(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert runner_(app) == 0  # serve_paste's return
    (server,) = captured
    check_cast(server, name, resolve(expected, unix_path))
    assert fake_native[0].app is probe.app


def test_paste_empty_ident_means_none(tmp_path, fake_native, clean_signals, captured):
    from paste.deploy import loadserver

    loadserver(write_ini(tmp_path, {"listen": "127.0.0.1:0", "ident": ""}))(probe.app)
    assert captured[0].adj.ident is None


@pytest.mark.parametrize("kw,error,message", SERVE_ERRORS)
def test_paste_errors(kw, error, message, tmp_path, fake_native):
    from paste.deploy import loadserver

    server_runner = loadserver(write_ini(tmp_path, kw))
    with pytest.raises(error) as caught:
        server_runner(probe.app)
    assert str(caught.value) == message
    assert list(fake_native) == []


# -- the same front doors on a real server -------------------------------------------


def test_cli_settings_take_effect(tmp_path):
    proc = Process.maitre_serve(
        "--listen=127.0.0.1:0",
        "--threads=2",
        "--ident=Acme/2",
        "--server-name=srv.example",
        "--url-scheme=https",
        "--url-prefix=/app/",
        "--expose-tracebacks",
        "--max-request-body-size=100",
        "--max-request-header-size=2000",
        "--no-clear-untrusted-proxy-headers",
        "apps.probe:app",
    )
    try:
        _, port = proc.wait_serving()
        address = ("127.0.0.1", port)
        with connect(address) as client:
            response = client.request("GET", "/app/x", [("X-Forwarded-For", "1.2.3.4")])
            environ = json.loads(response.body)
            assert response.header("Server") == "Acme/2"
            assert environ["SERVER_SOFTWARE"] == "Acme/2"
            assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/x")
            assert environ["SERVER_NAME"] == "srv.example"
            assert environ["wsgi.url_scheme"] == "https"
            assert environ["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
            failed = client.request("GET", "/app/fail")
            assert failed.status == 500
            assert b"Traceback (most recent call last)" in failed.body
            assert failed.body.endswith(b"(generated by Acme/2)")
        with connect(address) as client:
            assert client.request("POST", "/app/echo", [], b"x" * 100).status == 413
        with connect(address) as client:
            assert client.request("GET", "/app/", [("X-Big", "b" * 2500)]).status == 431
        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()


@needs_unix
def test_cli_unix_socket(short_tmp):
    path = os.path.join(short_tmp, "cli.sock")
    proc = Process.maitre_serve(f"--unix-socket={path}", "--unix-socket-perms=660",
                                "apps.probe:app")
    try:
        line = proc.wait_line("Serving on")
        assert line.string == f"INFO:maitre:Serving on http://unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with connect(path) as client:
            assert client.request("POST", "/echo", [], b"unix").body == b"unix"
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.kill()


def test_paste_settings_take_effect(tmp_path, captured):
    from paste.deploy import loadapp, loadserver

    uri = write_ini(tmp_path, {
        "listen": "127.0.0.1:0",
        "threads": "2",
        "ident": "PasteServer",
        "url_prefix": "/mount",
        "server_name": "paste.example",
        "expose_tracebacks": "true",
        "max_request_body_size": "50",
    })
    app = loadapp(uri)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("rc", loadserver(uri)(app)), daemon=True
    )
    thread.start()
    try:
        assert wait_for(lambda: len(captured) == 1)
        address = ("127.0.0.1", int(captured[0].effective_port))
        with connect(address) as client:
            response = client.request("GET", "/mount/p")
            environ = json.loads(response.body)
            assert response.header("Server") == "PasteServer"
            assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/mount", "/p")
            assert environ["SERVER_NAME"] == "paste.example"
            failed = client.request("GET", "/mount/fail")
            assert b"RuntimeError: probe failure /p" not in failed.body
            assert b"RuntimeError: probe failure /fail" in failed.body
        with connect(address) as client:
            assert client.request("POST", "/mount/echo", [], b"y" * 50).status == 413
    finally:
        for server in captured:
            server.close()
        thread.join(GUARD)
    assert not thread.is_alive()
    assert outcome == {"rc": 0}

