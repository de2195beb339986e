"""A tiny WSGI application to try the server with:

    maitre-serve --listen=127.0.0.1:8080 maitre.demo:app

``/`` shows a few environ values; ``POST /echo`` sends the body back.
"""

_SHOWN = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "REMOTE_ADDR",
    "HTTP_HOST",
    "wsgi.url_scheme",
)


def _respond(start_response, status, body, content_type="text/plain; charset=utf-8",
             extra=()):
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers + list(extra))
    return [body]


def _hello(environ, start_response):
    lines = ["Hello from maitre!", ""]
    lines += [f"{key}: {environ.get(key, '')}" for key in _SHOWN]
    body = ("\n".join(lines) + "\n").encode("utf-8", "replace")
    return _respond(start_response, "200 OK", body)


def _echo(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        return _respond(
            start_response, "405 Method Not Allowed", b"POST a body to /echo\n",
            extra=[("Allow", "POST")],
        )
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    content_type = environ.get("CONTENT_TYPE") or "application/octet-stream"
    return _respond(start_response, "200 OK", body, content_type)


def app(environ, start_response):
    """``/``: hello page; ``/echo``: echo of a POST body; anything else: 404."""
    path = environ.get("PATH_INFO", "")
    if path in ("", "/"):
        return _hello(environ, start_response)
    if path == "/echo":
        return _echo(environ, start_response)
    return _respond(start_response, "404 Not Found", b"Not Found\n")
