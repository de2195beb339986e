"""The WSGI environ as an application sees it over a real socket."""

import io
import os
import sys

import pytest

from apps.live import build_request, chunked, live  # noqa: F401
from apps.probe import Capture
from maitre.filewrapper import FileWrapper


def capture(live, raw, probe=None, **kw):
    """Send ``raw`` on a new connection; the app's environ (and probe
    result) once the response is in."""
    app = Capture(probe)
    server = live(app, **kw)
    with server.connect() as client:
        client.send(raw)
        response = client.read_response()
        assert response.status == 200, response
        app.client_port = client.sock.getsockname()[1]
    app.server = server
    return app


def get(live, target, headers=(), version="HTTP/1.1", **kw):
    return capture(live, build_request("GET", target, headers, version=version), **kw).environ


def test_exact_key_set_of_a_simple_get(live):
    environ = get(live, "/")
    assert set(environ) == {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "SERVER_PROTOCOL",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_SOFTWARE",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "HTTP_HOST",
        "wsgi.version",
        "wsgi.url_scheme",
        "wsgi.input",
        "wsgi.input_terminated",
        "wsgi.errors",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "wsgi.file_wrapper",
        "waitress.client_disconnected",
        "maitre.client_disconnected",
    }


def test_server_and_peer_values(live):
    app = capture(live, build_request("GET", "/"))
    environ = app.environ
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["SERVER_NAME"] == "waitress.invalid"  # never from Host
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["SERVER_PORT"] == str(app.server.port)
    assert environ["SERVER_SOFTWARE"] == "maitre"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_HOST"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(app.client_port)


def test_cgi_values_are_str(live):
    environ = get(live, "/p?q", [("X-A", "1")])
    for key, value in environ.items():
        if "." not in key:
            assert type(value) is str, key


def test_wsgi_values(live):
    environ = get(live, "/")
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.input_terminated"] is True
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.file_wrapper"] is FileWrapper
    assert isinstance(environ["wsgi.input"], io.BytesIO)


@pytest.mark.parametrize(
    "target,path,query",
    [
        ("/a%2Fb/c?x=1&y=%20", "/a/b/c", "x=1&y=%20"),
        ("//x//y?q=1", "/x//y", "q=1"),
        ("///x", "/x", ""),
        ("/a%3Fb?c?d", "/a?b", "c?d"),
        ("/sp+ace%20x", "/sp+ace x", ""),
        ("/caf%C3%A9", "/caf\xc3\xa9", ""),  # PEP 3333 bytes-in-str
        ("/bad%zz", "/bad%zz", ""),
        ("/%2e%2e/x", "/../x", ""),
        ("/p?", "/p", ""),
        ("/p#frag", "/p", ""),
        ("/p?q=1#frag", "/p", "q=1"),
        ("http://other:81/abs?q", "/abs", "q"),
    ],
)
def test_path_info_query_string_request_uri(live, target, path, query):
    environ = get(live, target)
    assert environ["PATH_INFO"] == path
    assert environ["QUERY_STRING"] == query
    assert environ["REQUEST_URI"] == target  # raw, fragment included


def test_absolute_form_keeps_host_header(live):
    environ = get(live, "http://other:81/abs", [("Host", "real.example")])
    assert environ["HTTP_HOST"] == "real.example"
    assert environ["wsgi.url_scheme"] == "http"


def test_options_star(live):
    environ = capture(live, build_request("OPTIONS", "*")).environ
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"]) == ("OPTIONS", "*")


@pytest.mark.parametrize(
    "version,protocol",
    [("HTTP/1.0", "HTTP/1.0"), ("HTTP/1.1", "HTTP/1.1"), ("HTTP/2.0", "HTTP/1.0"), ("", "HTTP/1.0")],
)
def test_server_protocol(live, version, protocol):
    app = Capture()
    server = live(app)
    with server.connect() as client:
        client.send(build_request("GET", "/", [("Host", "h")], version=version))
        response = client.read_response()
        assert response.status_line == f"{protocol} 200 OK"
    assert app.environ["SERVER_PROTOCOL"] == protocol


def test_no_body_no_content_keys(live):
    environ = get(live, "/")
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        assert key not in environ


def test_content_type_and_length_when_sent(live):
    raw = build_request("POST", "/", [("Content-Type", "text/x-probe; a=b")], b"12345")
    environ = capture(live, raw).environ
    assert environ["CONTENT_TYPE"] == "text/x-probe; a=b"
    assert environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ


def test_content_length_zero_is_kept(live):
    environ = capture(live, build_request("POST", "/", [("Content-Length", "0")])).environ
    assert environ["CONTENT_LENGTH"] == "0"
    assert "CONTENT_TYPE" not in environ


def test_chunked_body_gets_decoded_length(live):
    raw = build_request(
        "POST", "/", [("Transfer-Encoding", "chunked")], chunked(b"abc", b"defgh")
    )
    app = capture(live, raw, probe=lambda e: e["wsgi.input"].read())
    assert app.environ["CONTENT_LENGTH"] == "8"
    assert "HTTP_TRANSFER_ENCODING" not in app.environ
    assert app.results == [b"abcdefgh"]


def test_headers_joined_dropped_and_latin1(live):
    headers = [
        ("X-Dup", "1"),
        ("x-dup", "2"),
        ("X-DUP", "3"),
        ("X-Auth-User", "good"),
        ("X-Auth_User", "evil"),
        ("X_Only_Underscore", "x"),
        ("X-Latin", "caf\xe9"),
        ("X-Empty", ""),
        ("Connection", "keep-alive"),
        ("Accept", "*/*"),
    ]
    environ = get(live, "/", headers)
    assert environ["HTTP_X_DUP"] == "1, 2, 3"
    assert environ["HTTP_X_AUTH_USER"] == "good"
    assert "HTTP_X_ONLY_UNDERSCORE" not in environ
    assert environ["HTTP_X_LATIN"] == "caf\xe9"
    assert environ["HTTP_X_EMPTY"] == ""
    assert environ["HTTP_CONNECTION"] == "keep-alive"
    assert environ["HTTP_ACCEPT"] == "*/*"


def test_header_cannot_overwrite_cgi_keys(live):
    # "Script-Name" would be HTTP_SCRIPT_NAME; nothing may become SCRIPT_NAME.
    environ = get(live, "/", [("Script-Name", "/evil"), ("Remote-Addr", "6.6.6.6")])
    assert environ["SCRIPT_NAME"] == ""
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["HTTP_SCRIPT_NAME"] == "/evil"


BODY = b"line1\nline2\n\nline4\nrest-without-newline"


def exercise_input(environ):
    """Every way of reading wsgi.input, while the request runs."""
    inp = environ["wsgi.input"]
    out = {"type": type(inp).__name__}
    out["read3"] = inp.read(3)
    out["readline"] = inp.readline()
    out["readline_sized"] = inp.readline(2)
    out["readlines"] = inp.readlines()
    out["at_end"] = inp.read()
    inp.seek(0)
    out["iterated"] = list(inp)
    inp.seek(6)
    out["tell"] = inp.tell()
    out["after_seek"] = inp.read(5)
    inp.seek(0)
    out["all"] = inp.read()
    try:
        out["fileno_size"] = os.fstat(inp.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        out["fileno_size"] = None
    return out


def expected_reads(body):
    lines = body.splitlines(keepends=True)
    first_rest = lines[0][3:]
    return {
        "read3": body[:3],
        "readline": first_rest,
        "readline_sized": lines[1][:2],
        "readlines": [lines[1][2:]] + lines[2:],
        "at_end": b"",
        "iterated": lines,
        "tell": 6,
        "after_seek": body[6:11],
        "all": body,
    }


def test_wsgi_input_small_body(live):
    app = capture(live, build_request("POST", "/", [], BODY), probe=exercise_input)
    (result,) = app.results
    assert result.pop("type") == "BytesIO"
    assert result.pop("fileno_size") is None
    assert result == expected_reads(BODY)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_wsgi_input_over_inbuf_overflow_is_a_real_file(live, framing):
    body = b"".join(b"line %06d of a long body\n" % i for i in range(20000))  # 500 KB
    if framing == "chunked":
        raw = build_request(
            "POST", "/", [("Transfer-Encoding", "chunked")], chunked(body[:300000], body[300000:])
        )
    else:
        raw = build_request("POST", "/", [], body)
    app = capture(live, raw, probe=exercise_input, inbuf_overflow=65536)
    (result,) = app.results
    assert result.pop("type") == "BufferedRandom"
    assert result.pop("fileno_size") == len(body)
    assert result == expected_reads(body)
    assert app.environ["CONTENT_LENGTH"] == str(len(body))


def test_wsgi_input_under_inbuf_overflow_stays_in_memory(live):
    body = b"x" * 60000
    app = capture(live, build_request("POST", "/", [], body), probe=exercise_input,
                  inbuf_overflow=65536)
    assert app.results[0]["type"] == "BytesIO"


def test_wsgi_input_empty(live):
    app = capture(live, build_request("GET", "/"), probe=lambda e: e["wsgi.input"].read())
    assert app.results == [b""]


def test_client_disconnected_callables(live):
    def probe(environ):
        return [
            (callable(environ[key]), environ[key]())
            for key in ("maitre.client_disconnected", "waitress.client_disconnected")
        ]

    app = capture(live, build_request("GET", "/"), probe=probe)
    assert app.results == [[(True, False), (True, False)]]
