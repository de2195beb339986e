"""A plain WSGI application behind ``wsgiref.validate.validator``, which
asserts that server and application both keep PEP 3333 (every CGI value a
str, ``wsgi.input`` read with a size, the iterator closed, ...)."""

from wsgiref.validate import validator


def _plain(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        body = b"posted " + data
    else:
        body = f"{method} {path}?{environ['QUERY_STRING']}".encode("latin-1")
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


app = validator(_plain)
