"""serve(), serve_paste(), the package surface."""

import importlib.metadata
import logging

import pytest

import maitre
from maitre import serve, serve_paste


class FakeServer:
    """What ``_server`` builds: records the calls serve() makes."""

    def __init__(self):
        self.calls = []

    def __call__(self, app, **kw):
        self.app, self.kw = app, kw
        self.calls.append("create")
        return self

    def print_listen(self, format_str):
        self.calls.append(("print_listen", format_str))

    def run(self):
        self.calls.append("run")


def test_serve_builds_and_runs():
    server, app = FakeServer(), object()
    assert serve(app, _server=server, _quiet=True, threads="2") is None
    assert server.app is app
    assert server.kw == {"threads": "2"}
    assert server.calls == ["create", "run"]


def test_serve_not_quiet_prints_listen_and_configures_logging(monkeypatch):
    configured = []
    monkeypatch.setattr(logging, "basicConfig", lambda: configured.append(True))
    server = FakeServer()
    serve(object(), _server=server)
    assert configured == [True]
    assert server.calls == ["create", ("print_listen", "Serving on http://{}:{}"), "run"]


def test_serve_quiet_leaves_logging_alone(monkeypatch):
    configured = []
    monkeypatch.setattr(logging, "basicConfig", lambda: configured.append(True))
    serve(object(), _server=FakeServer(), _quiet=True)
    assert configured == []


def test_serve_logs_listen_at_info(fake_native, clean_signals, caplog, monkeypatch):
    monkeypatch.setattr(logging, "basicConfig", lambda: None)
    caplog.set_level(logging.INFO, logger="maitre")
    serve(object(), listen="127.0.0.1:0")
    (native,) = fake_native
    port = native.listeners[0][3]
    assert caplog.record_tuples == [
        ("maitre", logging.INFO, f"Serving on http://127.0.0.1:{port}")
    ]


def test_serve_unknown_setting():
    with pytest.raises(ValueError, match="^Unknown adjustment 'bogus'$"):
        serve(object(), bogus=1, _quiet=True)


def test_serve_profile(capsys):
    server = FakeServer()
    serve(object(), _server=server, _quiet=True, _profile=True)
    assert server.calls == ["create", "run"]
    assert "function calls" in capsys.readouterr().out


def test_serve_paste_returns_zero_and_passes_strings():
    server = FakeServer()
    assert serve_paste(object(), {"here": "/"}, _server=server, _quiet=True, port="0") == 0
    assert server.kw == {"port": "0"}
    assert server.calls == ["create", "run"]


def test_create_server_reexported():
    import maitre.server

    assert maitre.create_server is maitre.server.create_server


def test_version():
    assert maitre.__version__ == importlib.metadata.version("maitre")


def test_paste_entry_point():
    eps = importlib.metadata.entry_points(group="paste.server_runner")
    (main,) = [ep for ep in eps if ep.value.startswith("maitre")]
    assert main.load() is serve_paste
