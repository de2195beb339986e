"""The access log (``access_log``, ``access_log_format``) on a live server:
lines parsed back field by field, to a file, to a handler on the
``maitre.access`` logger and to standard output from ``maitre-serve``."""

import datetime
import json
import logging
import re
import signal
import threading
import time

import pytest

from apps.live import GUARD, Process, build_request, connect, live, wait_for  # noqa: F401

#: The window of a negative check ("no line appears").
WINDOW = 0.5

LOGGER = "maitre.access"

# A quoted Apache field: anything but `"` and `\`, or a backslash escape.
QUOTED = r'"((?:[^"\\]|\\.)*)"'
COMMON_RE = re.compile(
    r"^(\S+) - (\S+) \[([^\]]+)\] " + QUOTED + r" (\d{3}) (\d+|-)$"
)
COMBINED_RE = re.compile(
    r"^(\S+) - (\S+) \[([^\]]+)\] " + QUOTED + r" (\d{3}) (\d+|-) " + QUOTED + " " + QUOTED + "$"
)

#: Header values with everything that needs escaping: quotes, backslashes, a
#: latin-1 byte (sent raw on the wire) and a bracket.
USER_AGENT = 'Mozilla/5.0 "quoted" back\\slash caf\xe9 [x]'
REFERER = 'http://example.com/?q="a\\b"'
TARGET = "/search%22x?q=%22hi%22&r=\\z"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        body = b"nothing here"
        start_response("404 Not Found", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/user":
        environ["REMOTE_USER"] = 'al"ice'
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(environ["QUERY_STRING"], "rb"))
    body = environ["wsgi.input"].read() or b"hello world"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def unescape_apache(text):
    """Undo Apache's log escaping: the original value as latin-1 text."""
    simple = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "v": "\v", '"': '"', "\\": "\\"}

    def one(match):
        esc = match.group(1)
        return chr(int(esc[1:], 16)) if esc[0] == "x" else simple[esc]

    return re.sub(r"\\(x[0-9a-f]{2}|.)", one, text)


def read_lines(path, count):
    """The first ``count`` lines of ``path`` once it has them."""
    lines = []

    def enough():
        nonlocal lines
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= count

    assert wait_for(enough), f"expected {count} lines, have {lines!r}"
    return lines


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def lines(self):
        return [r.getMessage() for r in self.records]


@pytest.fixture
def collect():
    """A handler on ``maitre.access`` that records everything, with the
    logger at INFO whatever the server does; removed afterwards."""
    logger = logging.getLogger(LOGGER)
    handler = Collect()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def send(server, method="GET", path="/", headers=(), body=b""):
    with server.connect() as client:
        client.send(build_request(method, path, list(headers), body))
        return client.read_response(method)


def assert_recent(when):
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) < 60, when
    assert when.utcoffset() == datetime.datetime.now().astimezone().utcoffset()


# -- Apache formats ---------------------------------------------------------------


def test_combined_to_a_file_is_appended_and_parses_back(live, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("earlier line\n")
    server = live(app, access_log=str(log))
    headers = [("User-Agent", USER_AGENT), ("Referer", REFERER)]
    ok = send(server, "GET", TARGET, headers)
    missing = send(server, "GET", "/missing")
    posted = send(server, "POST", "/", body=b"x" * 1234)
    head = send(server, "HEAD", "/")
    lines = read_lines(log, 5)
    assert lines[0] == "earlier line"
    fields = [COMBINED_RE.match(line) for line in lines[1:]]
    assert all(fields), lines
    first, second, third, fourth = (m.groups() for m in fields)

    host, user, when, request, status, size, referer, agent = first
    assert (host, user) == ("127.0.0.1", "-")
    assert_recent(datetime.datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z"))
    assert unescape_apache(request) == f"GET {TARGET} HTTP/1.1"
    assert (int(status), int(size)) == (200, len(ok.body))
    assert unescape_apache(referer) == REFERER
    assert unescape_apache(agent) == USER_AGENT
    # The latin-1 byte is written as Apache does: \xe9; lines stay ASCII.
    assert "caf\\xe9" in agent

    assert second[3:6] == ("GET /missing HTTP/1.1", "404", str(len(missing.body)))
    assert second[6:] == ("-", "-")
    assert third[3:6] == ("POST / HTTP/1.1", "200", "1234")
    assert posted.body == b"x" * 1234
    # HEAD: no body went out.
    assert fourth[3:6] == ("HEAD / HTTP/1.1", "200", "-")
    assert head.body == b""


def test_common_has_no_referer_or_user_agent(live, tmp_path):
    log = tmp_path / "access.log"
    server = live(app, access_log=str(log), access_log_format="common")
    send(server, "GET", "/x", [("User-Agent", "agent"), ("Referer", "ref")])
    (line,) = read_lines(log, 1)
    match = COMMON_RE.match(line)
    assert match, line
    assert match.group(4) == "GET /x HTTP/1.1"
    assert match.group(5, 6) == ("200", "11")
    assert "agent" not in line and "ref" not in line


def test_proxy_address_remote_user_and_error_size(live, tmp_path):
    log = tmp_path / "access.log"
    server = live(
        app,
        access_log=str(log),
        trusted_proxy="127.0.0.1",
        trusted_proxy_headers="x-forwarded-for",
    )
    send(server, "GET", "/user", [("X-Forwarded-For", "203.0.113.9")])
    failed = send(server, "GET", "/boom")
    assert failed.status == 500
    first, second = (COMBINED_RE.match(line).groups() for line in read_lines(log, 2))
    # REMOTE_ADDR after the proxy step; REMOTE_USER as the app set it.
    assert first[:2] == ("203.0.113.9", 'al\\"ice')
    # The engine's 500: its body size, as sent.
    assert second[4:6] == ("500", str(len(failed.body)))
    assert second[0] == "127.0.0.1"


def test_request_timeout_is_logged_as_the_503_sent(live, tmp_path):
    def slow(environ, start_response):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # interrupted by RequestTimeout
            time.sleep(0.01)
        start_response("200 OK", [])
        return [b"late"]

    log = tmp_path / "access.log"
    server = live(slow, access_log=str(log), access_log_format="json", request_timeout=1)
    response = send(server, "GET", "/slow")
    assert response.status == 503
    (line,) = read_lines(log, 1)
    entry = json.loads(line)
    assert (entry["status"], entry["bytes"]) == (503, len(response.body))
    assert entry["duration_ms"] >= 900


def test_file_wrapper_size(live, tmp_path):
    log = tmp_path / "access.log"
    data = tmp_path / "data.bin"
    data.write_bytes(b"z" * 70000)
    server = live(app, access_log=str(log))
    response = send(server, "GET", f"/file?{data}")
    assert response.body == data.read_bytes()
    (line,) = read_lines(log, 1)
    assert COMBINED_RE.match(line).group(6) == "70000"


def test_file_reopened_after_rotation(live, tmp_path, monkeypatch):
    from maitre import accesslog

    monkeypatch.setattr(accesslog, "ROTATION_CHECK_INTERVAL", 0.0)
    log = tmp_path / "access.log"
    server = live(app, access_log=str(log))
    send(server, "GET", "/before")
    read_lines(log, 1)
    log.rename(tmp_path / "access.log.1")
    send(server, "GET", "/after")
    (line,) = read_lines(log, 1)
    assert '"GET /after HTTP/1.1"' in line
    assert "/before" in (tmp_path / "access.log.1").read_text()


# -- JSON ---------------------------------------------------------------------------


def test_json_to_a_file_and_a_handler(live, tmp_path, collect, caplog):
    log = tmp_path / "access.jsonl"
    server = live(app, access_log=str(log), access_log_format="json")
    started = time.time()
    with caplog.at_level(logging.INFO):
        ok = send(server, "GET", TARGET, [("User-Agent", USER_AGENT), ("Referer", REFERER)])
        send(server, "GET", "/missing", [("User-Agent", "tab\there")])
        lines = read_lines(log, 2)
    entries = [json.loads(line) for line in lines]
    assert all(line.isascii() for line in lines)

    first, second = entries
    assert set(first) == {
        "time",
        "remote_addr",
        "remote_user",
        "method",
        "path",
        "protocol",
        "status",
        "bytes",
        "referer",
        "user_agent",
        "duration_ms",
    }
    assert first["remote_addr"] == "127.0.0.1"
    assert first["remote_user"] is None
    assert (first["method"], first["path"], first["protocol"]) == ("GET", TARGET, "HTTP/1.1")
    assert (first["status"], first["bytes"]) == (200, len(ok.body))
    assert first["user_agent"] == USER_AGENT
    assert first["referer"] == REFERER
    assert isinstance(first["duration_ms"], float) and 0 <= first["duration_ms"] < GUARD * 1000
    when = datetime.datetime.fromisoformat(first["time"])
    assert_recent(when)
    assert started - 1 <= when.timestamp() <= time.time() + 1

    assert (second["status"], second["referer"]) == (404, None)
    assert second["user_agent"] == "tab\there"

    # The same lines reached the handler on the logger, at INFO ...
    assert wait_for(lambda: len(collect.records) >= 2)
    assert collect.lines == lines
    assert {r.levelno for r in collect.records} == {logging.INFO}
    # ... and did not propagate to the root logger's handlers.
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_logger_restored_after_run(live, tmp_path):
    logger = logging.getLogger(LOGGER)
    before = (logger.level, logger.propagate, list(logger.handlers))
    server = live(app, access_log=str(tmp_path / "a.log"))
    send(server)
    read_lines(tmp_path / "a.log", 1)
    assert not logger.propagate
    server.stop()
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_nothing_is_logged_when_access_log_is_unset(live, collect):
    server = live(app)
    for path in ("/", "/missing", "/boom"):
        send(server, "GET", path)
    time.sleep(WINDOW)
    assert collect.records == []


# -- maitre-serve ---------------------------------------------------------------------


def read_stdout_lines(proc, count):
    """``count`` lines from the process's standard output, as they come."""
    lines = []

    def read():
        for _ in range(count):
            lines.append(proc.proc.stdout.readline().rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(GUARD)
    assert not reader.is_alive(), f"only {lines!r} on stdout"
    return lines


def test_cli_prints_json_lines_on_stdout():
    proc = Process.maitre_serve(
        "--listen=127.0.0.1:0", "--access-log=-", "--access-log-format=json", "apps.probe:app"
    )
    try:
        _, port = proc.wait_serving()
        with connect(("127.0.0.1", port)) as client:
            assert client.request("GET", "/a%22b?c", [("User-Agent", 'x"y')]).status == 200
            assert client.request("GET", "/fail").status == 500
        lines = read_stdout_lines(proc, 2)
        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()
    entries = [json.loads(line) for line in lines]
    assert [(e["path"], e["status"]) for e in entries] == [("/a%22b?c", 200), ("/fail", 500)]
    assert entries[0]["user_agent"] == 'x"y'
    # Not also on stderr through the root logger.
    assert not any('"status"' in line for line in proc.rest())
