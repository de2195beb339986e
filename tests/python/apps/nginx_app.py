"""The application behind nginx in test_nginx.py, and the data it moves.

Every response carries ``X-Peer: REMOTE_ADDR REMOTE_PORT`` as the app saw
them, so a test can tell which connection (nginx -> maitre) served it.
The route is the last segment of the path, so that one app serves every
nginx ``location`` prefix:

* ``env``: the environ as JSON (``probe.environ_json``).
* ``upload``: reads ``wsgi.input`` in blocks and answers its size and
  sha256 as JSON (never holds the whole body).
* ``download?<MiB>``: ``blocks(MiB)`` with a Content-Length;
  ``download-chunked?<MiB>``: the same without one (chunked on the wire).
* ``pieces``: a fixed list of uneven pieces without a Content-Length,
  given through both ``write()`` and the iterable, an empty one included.
"""

import hashlib
import json

from apps.probe import environ_json

MIB = 1 << 20

#: What ``pieces`` sends, in order: uneven sizes, an empty piece, one
#: larger than nginx's proxy buffers, bytes that look like chunk framing.
PIECES = (
    b"first\n",
    b"",
    b"0\r\n\r\n",
    bytes(range(256)) * 300,
    b"x" * 70000,
    b"last\n",
)


def block(i):
    """Block ``i`` of the test stream: 1 MiB, different for every ``i``
    (so lost, repeated or reordered blocks change the checksum)."""
    return hashlib.shake_256(b"maitre-nginx-%d" % i).digest(MIB)


def blocks(mib):
    for i in range(mib):
        yield block(i)


def stream_sha256(mib):
    """The size and sha256 hex digest of ``blocks(mib)``."""
    digest = hashlib.sha256()
    for data in blocks(mib):
        digest.update(data)
    return mib * MIB, digest.hexdigest()


def _peer(environ):
    return ("X-Peer", f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']}")


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        data = stream.read(MIB)
        if not data:
            break
        size += len(data)
        digest.update(data)
    body = json.dumps(
        {
            "size": size,
            "sha256": digest.hexdigest(),
            "content_length": environ.get("CONTENT_LENGTH"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), _peer(environ)],
    )
    return [body]


def _download(environ, start_response, with_length):
    mib = int(environ.get("QUERY_STRING") or 1)
    headers = [("Content-Type", "application/octet-stream"), _peer(environ)]
    if with_length:
        headers.append(("Content-Length", str(mib * MIB)))
    start_response("200 OK", headers)
    return blocks(mib)


def _pieces(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "application/octet-stream"), _peer(environ)])
    write(PIECES[0])
    return list(PIECES[1:])


def _env(environ, start_response):
    def with_peer(status, headers, exc_info=None):
        return start_response(status, headers + [_peer(environ)], exc_info)

    return environ_json(environ, with_peer)


ROUTES = {
    "env": _env,
    "upload": _upload,
    "download": lambda environ, start_response: _download(environ, start_response, True),
    "download-chunked": lambda environ, start_response: _download(environ, start_response, False),
    "pieces": _pieces,
}


def app(environ, start_response):
    route = environ["PATH_INFO"].rsplit("/", 1)[-1]
    handler = ROUTES.get(route)
    if handler is None:
        start_response("404 Not Found", [("Content-Length", "0"), _peer(environ)])
        return [b""]
    return handler(environ, start_response)
