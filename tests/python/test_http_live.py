"""HTTP behaviour through the Python drop-in on real sockets: each of the
binding Decisions (where maitre deliberately differs from Waitress), framing
of app responses, large bodies both ways, pipelining and close."""

import email.utils
import hashlib
import logging
import threading
import time

import pytest

from apps.live import GUARD, build_request, chunked, live, wait_for  # noqa: F401
from apps.probe import Capture
from apps.probe import app as probe_app


def routes(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/204":
        start_response("204 No Content", [("Content-Length", "5")])
        return [b"hello"]
    if path == "/304":
        start_response("304 Not Modified", [("Content-Length", "5"), ("ETag", '"v1"')])
        return []
    if path == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"abc", b"def"])
    if path == "/two":
        start_response("200 OK", [])
        return [b"ab", b"cd"]
    if path == "/one":
        start_response("200 OK", [("www-authenticate", "Basic"), ("x-a", "1"), ("ETag", "e")])
        return [b"only"]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"abc"])
    if path == "/long":
        start_response("200 OK", [("Content-Length", "3")])
        return iter([b"abcdef", b"gh"])
    if path == "/empty":
        start_response("200 OK", [])
        return []
    return probe_app(environ, start_response)


@pytest.fixture
def server(live):
    return live(routes)


# -- Decisions ------------------------------------------------------------------------


def test_q1_chunked_response_keeps_the_connection(server):
    with server.connect() as client:
        for _ in range(3):
            response = client.request("GET", "/gen")
            assert response.header("Transfer-Encoding") == "chunked"
            assert response.header("Connection") is None
            assert response.body == b"abcdef"


@pytest.mark.parametrize("path,cl", [("/204", None), ("/304", "5")])
def test_q2_no_body_statuses_keep_the_connection(server, path, cl):
    with server.connect() as client:
        client.send(build_request("GET", path))
        head = client.read_until(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head and b"Connection" not in head
        assert (b"Content-Length: 5\r\n" in head) == (cl is not None)
        # No body bytes follow: the next response starts right after.
        assert client.request("GET", "/one").body == b"only"


@pytest.mark.parametrize("path,cl", [("/gen", None), ("/one", "4"), ("/empty", None)])
def test_q3_head_gets_no_body(server, path, cl):
    with server.connect() as client:
        client.send(build_request("HEAD", path))
        head = client.read_until(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head
        assert (f"Content-Length: {cl}\r\n".encode() in head) == (cl is not None)
        # Nothing else arrived (no body, no 0\r\n\r\n): the next answer is next.
        assert client.request("GET", "/one").body == b"only"


def test_q3_head_of_a_file_wrapper_sends_its_length_only(live, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"f" * 70000)
    opened = []

    def app(environ, start_response):
        f = open(path, "rb")
        opened.append(f)
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](f)

    server = live(app)
    with server.connect() as client:
        client.send(build_request("HEAD", "/"))
        assert b"Content-Length: 70000\r\n" in client.read_until(b"\r\n\r\n")
        assert len(client.request("GET", "/").body) == 70000
    assert wait_for(lambda: all(f.closed for f in opened))


def test_q4_expect_continue_only_when_a_body_comes(server):
    with server.connect() as client:
        # No body: answered directly, no 100.
        client.send(build_request("POST", "/echo", [("Expect", "100-continue")]))
        response = client.read_response()
        assert (response.status, response.body) == (200, b"")
        # A body announced: 100 first, then the answer once it is sent.
        client.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                                    ("Content-Length", "3")]))
        assert client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"abc")
        assert client.read_response().body == b"abc"


def test_q4_expect_continue_with_a_known_error_is_answered_at_once(live):
    server = live(probe_app, max_request_body_size=10)
    with server.connect() as client:
        client.send(build_request("POST", "/echo", [("Expect", "100-continue"),
                                                    ("Content-Length", "50")]))
        response = client.read_response()
        assert response.status == 413


def test_q10_http10_with_transfer_encoding_is_400(server):
    with server.connect() as client:
        client.send(build_request(
            "POST", "/echo", [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
            chunked(b"abc"), version="HTTP/1.0",
        ))
        response = client.read_response()
        assert response.status_line == "HTTP/1.0 400 Bad Request"
        assert client.closed_by_server()


@pytest.mark.parametrize(
    "version,connection,kept",
    [
        ("HTTP/1.1", "keep-alive, close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "upgrade", True),
        ("HTTP/1.0", "Keep-Alive, foo", True),
        ("HTTP/1.0", "foo,keep-alive", True),
        ("HTTP/1.0", "close", False),
    ],
)
def test_q12_connection_is_a_token_list(server, version, connection, kept):
    with server.connect() as client:
        response = client.request("GET", "/one", [("Connection", connection)], version=version)
        assert response.body == b"only"
        if kept:
            assert client.request("GET", "/one").body == b"only"
        else:
            assert response.header("Connection") == "close"
            assert client.closed_by_server()


def test_q15_content_length_and_chunked_decodes_chunked_then_closes(server):
    with server.connect() as client:
        client.send(build_request(
            "POST", "/echo", [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
            chunked(b"abcdef"),
        ))
        response = client.read_response()
        assert response.body == b"abcdef"
        assert response.header("Connection") == "close"
        assert client.closed_by_server()


# -- framing of app responses --------------------------------------------------------


def test_headers_recapitalised_and_sorted(server):
    with server.connect() as client:
        response = client.request("GET", "/one")
    assert response.names == ["Content-Length", "Date", "Etag", "Server", "Www-Authenticate", "X-A"]
    assert response.header("Content-Length") == "4"  # len(app_iter) == 1


def test_date_header_is_rfc1123(server):
    with server.connect() as client:
        date = client.request("GET", "/one").header("Date")
    assert date.endswith(" GMT")
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 60


def test_two_chunks_without_length_are_chunked(server):
    with server.connect() as client:
        response = client.request("GET", "/two")
        assert response.chunks == [2, 2, 0]
        assert response.body == b"abcd"


def test_too_few_bytes_closes(server, caplog):
    with caplog.at_level(logging.WARNING, logger="maitre"):
        with server.connect() as client:
            client.send(build_request("GET", "/short"))
            assert b"Content-Length: 10\r\n" in client.read_until(b"\r\n\r\n")
            assert client.read_to_eof() == b"abc"
    # Logged on the I/O thread, so it reaches `logging` through the relay thread.
    assert wait_for(lambda: (
        "application returned too few bytes (3) for specified Content-Length (10) "
        "via app_iter") in caplog.messages)


def test_too_many_bytes_are_cut_and_the_connection_kept(server, caplog):
    with caplog.at_level(logging.WARNING, logger="maitre"):
        with server.connect() as client:
            assert client.request("GET", "/long").body == b"abc"
            assert client.request("GET", "/one").body == b"only"
    cut = ("application-written content exceeded the number of bytes specified by "
           "Content-Length header (3)")
    assert wait_for(lambda: cut in caplog.messages)
    assert caplog.messages.count(cut) == 1


def test_pipelined_after_connection_close_are_dropped(live):
    app = Capture()
    server = live(app)
    with server.connect() as client:
        client.send(build_request("GET", "/1") + build_request("GET", "/2", [("Connection", "close")])
                    + build_request("GET", "/3"))
        assert client.read_response().status == 200
        assert client.read_response().header("Connection") == "close"
        assert client.closed_by_server()
    assert [e["PATH_INFO"] for e in app.environs] == ["/1", "/2"]


def test_twenty_five_pipelined_requests_in_order(server):
    wire = b"".join(build_request("POST", f"/echo/{i}", [], b"%d" % i * i) for i in range(25))
    with server.connect() as client:
        client.send(wire)
        for i in range(25):
            response = client.read_response()
            assert (response.header("X-Path"), response.body) == (f"/echo/{i}", b"%d" % i * i)


# -- large bodies ----------------------------------------------------------------------


def block(i):
    return hashlib.sha256(b"%d" % i).digest() * 320  # 10 KB, different per i


def test_large_streamed_response_to_a_slow_reader_is_exact(live):
    blocks = 2000  # 20 MB, far above outbuf_high_watermark

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/write":
            write = start_response("200 OK", [("Content-Length", str(blocks * 10240))])
            for i in range(blocks):
                write(block(i))
            return []
        start_response("200 OK", [])
        return (block(i) for i in range(blocks))

    expected = hashlib.sha256(b"".join(block(i) for i in range(blocks))).hexdigest()
    server = live(app, outbuf_high_watermark=65536)
    with server.connect() as client:
        response = client.request("GET", "/gen")
        assert hashlib.sha256(response.body).hexdigest() == expected
        client.send(build_request("GET", "/write"))
        client.read_until(b"\r\n\r\n")
        digest = hashlib.sha256()
        for _ in range(blocks):
            digest.update(client.read_exact(10240))
        assert digest.hexdigest() == expected


def test_large_upload_is_exact(live):
    body = b"".join(block(i) for i in range(800))  # 8 MB

    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        digest = hashlib.sha256(data).hexdigest().encode()
        start_response("200 OK", [("Content-Length", str(len(digest)))])
        return [digest]

    server = live(app, recv_bytes=4096)
    expected = hashlib.sha256(body).hexdigest().encode()
    with server.connect() as client:
        assert client.request("POST", "/", [], body).body == expected
        parts = [body[i:i + 100000] for i in range(0, len(body), 100000)]
        response = client.request("POST", "/", [("Transfer-Encoding", "chunked")], chunked(*parts))
        assert response.body == expected


def test_header_timeout_counts_from_the_start_of_a_trickle(live):
    """A client sending one byte at a time is cut header_timeout after the
    connection began, however steadily it trickles."""
    server = live(probe_app, header_timeout=1)
    trickle = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    with server.connect() as client:
        started = time.monotonic()
        closed = False
        for byte in trickle:
            try:
                client.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if not client.silent_for(0.1):
                closed = True
                break
        assert closed, "the trickling client was never cut off"
        assert client.closed_by_server()
        assert time.monotonic() - started < 3


def test_close_with_requests_in_flight_finishes_them(live, caplog):
    """close() while one request runs and one waits in the queue for a
    thread: a graceful stop answers both (with Connection: close), closes
    an idle keep-alive connection at once, then run() returns."""

    release = threading.Event()
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        release.wait(GUARD)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    running = live(app, threads=1)
    busy, queued, idle = running.connect(), running.connect(), running.connect()
    try:
        release.set()
        assert idle.request().status == 200  # now idle between requests
        entered.clear()
        release.clear()
        with caplog.at_level(logging.WARNING, logger="maitre"):
            busy.send(build_request())
            assert entered.wait(GUARD)
            queued.send(build_request())
            assert wait_for(lambda: "Task queue depth is 1" in caplog.messages)
            running.server.close()
            assert idle.closed_by_server(), "idle keep-alive connection closed at once"
            assert not running.returned.is_set()
            release.set()
            for client in (busy, queued):
                response = client.read_response()
                assert (response.status, response.body) == (200, b"ok")
                assert response.header("Connection") == "close"
                assert client.closed_by_server()
            assert running.returned.wait(GUARD), "run() did not return"
        queue_records = [r for r in caplog.records if r.getMessage() == "Task queue depth is 1"]
        assert queue_records[0].name == "maitre.queue"
        assert "Canceling 1 pending task(s)" not in caplog.messages
    finally:
        release.set()
        busy.close()
        queued.close()
        idle.close()
