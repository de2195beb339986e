"""The demo application, called directly."""

import io

from maitre.demo import app


def call(method="GET", path="/", body=b"", content_type=None, **extra):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "waitress.invalid",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "maitre",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    environ.update(extra)
    started = []
    chunks = app(environ, lambda status, headers: started.append((status, headers)))
    (status, headers), = started
    return status, dict(headers), b"".join(chunks)


def test_hello_shows_environ():
    status, headers, body = call(path="/", HTTP_HOST="example.org")
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == str(len(body))
    text = body.decode()
    assert text.startswith("Hello from maitre!")
    assert "PATH_INFO: /\n" in text
    assert "HTTP_HOST: example.org\n" in text
    assert "SERVER_SOFTWARE: maitre\n" in text


def test_echo_post_body():
    status, headers, body = call("POST", "/echo", b"ping \x00 pong", "application/x-test")
    assert status == "200 OK"
    assert body == b"ping \x00 pong"
    assert headers["Content-Type"] == "application/x-test"
    assert headers["Content-Length"] == "11"


def test_echo_empty_post():
    status, headers, body = call("POST", "/echo")
    assert (status, body, headers["Content-Type"]) == ("200 OK", b"", "application/octet-stream")


def test_echo_needs_post():
    status, headers, _ = call("GET", "/echo")
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "POST"


def test_unknown_path():
    assert call(path="/nope")[0] == "404 Not Found"
