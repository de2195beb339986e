"""maitre behind a real nginx, as it is deployed.

One nginx (a foreground process with a generated config, every path in a
temporary directory) proxies to three maitre servers running in this
process:

* ``tcp``: maitre on 127.0.0.1, ``trusted_proxy="127.0.0.1"`` and the three
  X-Forwarded-* headers trusted; nginx fronts it twice, in plain HTTP
  (``tcp``) and terminating TLS (``tls``);
* ``unix``: maitre on a Unix socket, ``trusted_proxy="localhost"``;
* ``plain``: maitre on 127.0.0.1 trusting nobody, so that ``REMOTE_PORT``
  is the port of the nginx -> maitre connection (keep-alive checks).

Every upstream has ``keepalive 8`` with ``proxy_http_version 1.1`` and an
empty ``Connection`` header. Each front has a ``/streamed/`` location with
``proxy_request_buffering off`` and ``proxy_buffering off``; elsewhere nginx
buffers bodies in its temp files (its default).

Clients connect from 127.0.0.2, so the address nginx sees (and forwards)
differs from the address maitre sees (nginx's, 127.0.0.1).

The tests skip when no nginx binary is installed, unless
``MAITRE_REQUIRE_NGINX`` is set (as ``.ci/run`` does): then they fail.
"""

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from apps.live import (
    GUARD,
    Client,
    LiveServer,
    Response,
    build_request,
    connect,
    free_port,
    wait_for,
)
from apps.nginx_app import MIB, PIECES, app, blocks, stream_sha256

APPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
TLS_CERT = os.path.join(APPS_DIR, "nginx_tls.crt")
TLS_KEY = os.path.join(APPS_DIR, "nginx_tls.key")

#: The address clients connect from: not nginx's own (127.0.0.1).
CLIENT_ADDR = "127.0.0.2"

TRUSTED_HEADERS = "x-forwarded-for x-forwarded-proto x-forwarded-host"

#: The size of the large transfers, in MiB.
BIG = 50


def _find_nginx():
    found = shutil.which("nginx")
    if found:
        return found
    # /usr/sbin is not on every user's PATH.
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


NGINX = _find_nginx()

if NGINX is None:
    if os.environ.get("MAITRE_REQUIRE_NGINX"):
        pytest.fail("MAITRE_REQUIRE_NGINX is set but no nginx binary was found", pytrace=False)
    pytest.skip("no nginx binary (Debian: apt-get install nginx)", allow_module_level=True)


# --- nginx -----------------------------------------------------------------

#: The proxy headers every front sets; ``{host}`` is the X-Forwarded-Host value.
PROXY_HEADERS = """
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host {host};
"""

FRONT = """
    server {{
        listen 127.0.0.1:{port}{ssl};
        {tls}
        {headers}
        location / {{
            proxy_pass http://{upstream};
        }}
        location /streamed/ {{
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_pass http://{upstream};
        }}
    }}
"""

CONFIG = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    proxy_http_version 1.1;
    proxy_read_timeout 20s;
    proxy_send_timeout 20s;

    upstream maitre_tcp {{
        server 127.0.0.1:{tcp_port};
        keepalive 8;
    }}
    upstream maitre_unix {{
        server unix:{unix_path};
        keepalive 8;
    }}
    upstream maitre_plain {{
        server 127.0.0.1:{plain_port};
        keepalive 8;
    }}
{fronts}
}}
"""


def _user_line():
    """Run as root, nginx's workers would switch to the compiled-in user
    (www-data), which cannot use this process's temporary files or Unix
    socket: keep them as the current user. Unprivileged, the directive is
    not needed (nginx ignores it with a warning)."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def _front(port, upstream, host_var="$host", tls=False):
    return FRONT.format(
        port=port,
        ssl=" ssl" if tls else "",
        tls=f"ssl_certificate {TLS_CERT}; ssl_certificate_key {TLS_KEY};" if tls else "",
        headers=PROXY_HEADERS.format(host=host_var),
        upstream=upstream,
    )


class Nginx:
    """nginx in the foreground (``daemon off``) with the config written to
    ``tmp``; its error log is ``tmp/error.log``."""

    def __init__(self, tmp, upstreams):
        self.tmp = tmp
        self.error_log = os.path.join(tmp, "error.log")
        self.ports = {name: free_port() for name in ("tcp", "tls", "unix", "plain")}
        fronts = "".join(
            [
                _front(self.ports["tcp"], "maitre_tcp"),
                # Behind TLS the forwarded host keeps the port the client used.
                _front(self.ports["tls"], "maitre_tcp", host_var="$http_host", tls=True),
                _front(self.ports["unix"], "maitre_unix"),
                _front(self.ports["plain"], "maitre_plain"),
            ]
        )
        config = CONFIG.format(user=_user_line(), tmp=tmp, fronts=fronts, **upstreams)
        self.config = os.path.join(tmp, "nginx.conf")
        with open(self.config, "w") as f:
            f.write(config)
        argv = [NGINX, "-p", tmp, "-c", self.config, "-e", self.error_log, "-g", "daemon off;"]
        with open(os.path.join(tmp, "nginx.out"), "w") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_ready(self):
        """True once every front accepts connections; False if nginx exits."""

        def ready():
            if self.proc.poll() is not None:
                return True
            for port in self.ports.values():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=GUARD).close()
                except OSError:
                    return False
            return True

        assert wait_for(ready), f"nginx did not start listening:\n{self.log()}"
        return self.proc.poll() is None

    def stop(self):
        """Fast shutdown (SIGTERM) of the master and its worker."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(GUARD)


class Stack:
    """The three maitre servers and the nginx in front of them."""

    def __init__(self, tmp):
        self.unix_path = os.path.join(tmp, "maitre.sock")
        self.servers = {
            "tcp": LiveServer(
                app, trusted_proxy="127.0.0.1", trusted_proxy_headers=TRUSTED_HEADERS
            ),
            "unix": LiveServer(
                app,
                unix_socket=self.unix_path,
                trusted_proxy="localhost",
                trusted_proxy_headers=TRUSTED_HEADERS,
            ),
            "plain": LiveServer(app),
        }
        try:
            self._start_nginx(tmp)
        except BaseException:
            for server in self.servers.values():
                server.stop()
            raise

    def _start_nginx(self, tmp):
        upstreams = {
            "tcp_port": self.servers["tcp"].port,
            "unix_path": self.unix_path,
            "plain_port": self.servers["plain"].port,
        }
        # A front port taken between free_port() and nginx's bind: try anew.
        for attempt in range(3):
            nginx = Nginx(tmp, upstreams)
            ready = False
            try:
                ready = nginx.wait_ready()
            finally:
                if not ready:
                    nginx.stop()
            if ready:
                self.nginx = nginx
                return
            log = nginx.log()
            if "Address already in use" not in log or attempt == 2:
                raise RuntimeError(f"nginx failed to start:\n{log}")
            os.remove(nginx.error_log)

    def client(self, front):
        """A ``ProxyClient`` connected from CLIENT_ADDR to nginx's ``front``
        (``tcp``, ``tls``, ``unix`` or ``plain``)."""
        address = ("127.0.0.1", self.nginx.ports[front])
        sock = socket.create_connection(address, timeout=GUARD, source_address=(CLIENT_ADDR, 0))
        if front == "tls":
            context = ssl.create_default_context(cafile=TLS_CERT)
            sock = context.wrap_socket(sock, server_hostname="shop.example")
        return ProxyClient(sock)

    def stop(self):
        self.nginx.stop()
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="module")
def stack():
    # Short: the Unix socket path must fit in ~100 bytes.
    tmp = tempfile.mkdtemp(prefix="mt-nginx-", dir="/tmp")
    os.chmod(tmp, 0o755)
    try:
        stack = Stack(tmp)
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ERROR_LINE = re.compile(r"\[(error|crit|alert|emerg)\]")


@pytest.fixture(autouse=True)
def nginx_logs_no_error(stack):
    """nginx notices what a client may not: an upstream that sent a bad
    chunk, more or less than its Content-Length, or closed early. Any such
    line logged during a test fails it. Yields a function giving what
    nginx logged since the test began."""
    start = len(stack.nginx.log())
    yield lambda: stack.nginx.log()[start:]
    errors = [line for line in stack.nginx.log()[start:].splitlines() if ERROR_LINE.search(line)]
    assert not errors, "nginx logged errors:\n" + "\n".join(errors)


# --- clients ---------------------------------------------------------------


class ProxyClient(Client):
    """``apps.live.Client`` over plain or TLS sockets, plus bodies hashed
    as they stream in (never held whole)."""

    def _fill(self, timeout=GUARD):
        # Bytes already decrypted by the TLS layer do not wake select().
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            self._buf += self.sock.recv(262144)
            return True
        return super()._fill(timeout)

    def _hash_exact(self, n, digest):
        while n:
            if not self._buf and not self._fill():
                raise EOFError(f"closed with {n} body bytes still to come")
            take = min(n, len(self._buf))
            digest.update(self._take(take))
            n -= take

    def read_response_hashed(self):
        """(response head, body size, body sha256) with the body framed by
        Content-Length or chunked coding, hashed as it arrives."""
        response = self.read_response_head()
        digest = hashlib.sha256()
        size = 0
        if response.header("Transfer-Encoding") is not None:
            assert response.header("Transfer-Encoding").lower() == "chunked"
            while True:
                chunk = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if chunk == 0:
                    assert self.read_until(b"\r\n") == b"\r\n", "unexpected trailers"
                    break
                self._hash_exact(chunk, digest)
                size += chunk
                assert self.read_exact(2) == b"\r\n"
        else:
            size = int(response.header("Content-Length"))
            self._hash_exact(size, digest)
        return response, size, digest.hexdigest()

    def read_response_head(self):
        return Response(self.read_until(b"\r\n\r\n"), b"")


def peer(response):
    """The (REMOTE_ADDR, REMOTE_PORT) the app saw for this response."""
    addr, port = response.header("X-Peer").split(" ")
    return addr, port


def stream_upload(client, path, mib, chunked):
    """POST ``blocks(mib)`` to ``path``, 1 MiB at a time, with a
    Content-Length or in chunked coding."""
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(mib * MIB))
    head = build_request("POST", path, [("Host", "shop.example"), framing])
    client.send(head)
    for data in blocks(mib):
        if chunked:
            client.send(b"%x\r\n" % len(data))
        client.send(data)
        if chunked:
            client.send(b"\r\n")
    if chunked:
        client.send(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def big_stream():
    """(size, sha256) of the BIG MiB test stream."""
    return stream_sha256(BIG)


# --- proxy headers ---------------------------------------------------------

#: What a client sends to try to pass itself off as someone else. nginx
#: replaces the three X-Forwarded-* it sets (appending to X-Forwarded-For);
#: the other three pass through and maitre must drop them as untrusted.
SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6, 7.7.7.7"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "1"),
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("X-Forwarded-By", "6.6.6.6"),
]


@pytest.mark.parametrize(
    "front,host,scheme,forwarded_host,server_name,server_port",
    [
        # nginx's $host: the Host header, lower-cased, without its port.
        ("tcp", "Shop.Example:8080", "http", "shop.example", "shop.example", "80"),
        ("unix", "Shop.Example:8080", "http", "shop.example", "shop.example", "80"),
        # $http_host keeps the port; https comes from nginx's TLS.
        ("tls", "shop.example:8443", "https", "shop.example:8443", "shop.example", "8443"),
    ],
)
def test_forwarded_headers_reach_the_app(
    stack, front, host, scheme, forwarded_host, server_name, server_port
):
    spoofed = [(n, v) for n, v in SPOOFED if not (front == "tls" and n == "X-Forwarded-Proto")]
    if front == "tls":
        spoofed.append(("X-Forwarded-Proto", "http"))
    with stack.client(front) as client:
        response = client.request("GET", "/env", [("Host", host)] + spoofed)
    assert response.status == 200, response
    environ = json.loads(response.body)

    # The client as nginx saw it, not nginx (127.0.0.1 / localhost).
    assert environ["REMOTE_ADDR"] == CLIENT_ADDR
    assert environ["REMOTE_HOST"] == CLIENT_ADDR
    # #452: only the trusted hop of X-Forwarded-For is kept.
    assert environ["HTTP_X_FORWARDED_FOR"] == CLIENT_ADDR

    assert environ["wsgi.url_scheme"] == scheme
    assert environ["HTTP_X_FORWARDED_PROTO"] == scheme
    assert environ["HTTP_HOST"] == forwarded_host
    assert environ["HTTP_X_FORWARDED_HOST"] == forwarded_host
    assert environ["SERVER_NAME"] == server_name
    assert environ["SERVER_PORT"] == server_port

    # Not trusted, so cleared even though they came through the proxy.
    for key in ("HTTP_FORWARDED", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY"):
        assert key not in environ, (key, environ.get(key))


def test_proxy_headers_from_an_untrusted_peer_are_dropped(stack):
    """The same headers sent straight to the TCP maitre from 127.0.0.2
    (not the trusted 127.0.0.1): none is believed, all are removed."""
    server = stack.servers["tcp"]
    sock = socket.create_connection(
        ("127.0.0.1", server.port), timeout=GUARD, source_address=(CLIENT_ADDR, 0)
    )
    client_port = sock.getsockname()[1]
    with ProxyClient(sock) as client:
        response = client.request("GET", "/env", [("Host", "direct.example")] + SPOOFED)
    environ = json.loads(response.body)
    assert environ["REMOTE_ADDR"] == CLIENT_ADDR
    assert environ["REMOTE_PORT"] == str(client_port)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == "direct.example"
    assert environ["SERVER_PORT"] == str(server.port)
    assert not [key for key in environ if "FORWARDED" in key]


# --- large bodies ----------------------------------------------------------

#: What nginx logs (at "warn") when a body goes through its temp files.
SPOOLED_REQUEST = "a client request body is buffered to a temporary file"
SPOOLED_RESPONSE = "an upstream response is buffered to a temporary file"


@pytest.mark.parametrize("front", ["tcp", "unix"])
@pytest.mark.parametrize(
    "path,chunked",
    [
        # nginx spools the body to a temp file, then sends a Content-Length.
        ("/upload", False),
        # nginx relays the client's chunks as they come (HTTP/1.1 upstream).
        ("/streamed/upload", True),
    ],
    ids=["buffered", "streamed-chunked"],
)
def test_50mib_upload_arrives_intact(
    stack, big_stream, nginx_logs_no_error, front, path, chunked, record_property
):
    size, sha256 = big_stream
    with stack.client(front) as client:
        started = time.monotonic()
        stream_upload(client, path, BIG, chunked)
        response = client.read_response()
        elapsed = time.monotonic() - started
        assert response.status == 200, response
        got = json.loads(response.body)
        assert (got["size"], got["sha256"]) == (size, sha256)
        # maitre de-chunks: the app sees a plain body with its length.
        assert got["content_length"] == str(size)
        assert got["transfer_encoding"] is None
        # The connection is still good afterwards.
        assert client.request("GET", "/env", [("Host", "shop.example")]).status == 200
    # Buffered: nginx had the whole body in its temp file before sending it.
    assert (SPOOLED_REQUEST in nginx_logs_no_error()) == (not path.startswith("/streamed/"))
    record_property("seconds", round(elapsed, 3))
    print(f"upload {BIG} MiB via nginx {front} {path}: {elapsed:.2f} s")


@pytest.mark.parametrize("front", ["tcp", "unix"])
@pytest.mark.parametrize(
    "path",
    [
        "/download",  # Content-Length, nginx buffers in a temp file
        "/download-chunked",  # chunked from maitre, nginx buffers
        "/streamed/download",  # Content-Length, nginx relays as it reads
        "/streamed/download-chunked",  # chunked, relayed as read
    ],
)
def test_50mib_download_arrives_intact(
    stack, big_stream, nginx_logs_no_error, front, path, record_property
):
    size, sha256 = big_stream
    buffered = not path.startswith("/streamed/")
    with stack.client(front) as client:
        started = time.monotonic()
        client.send(build_request("GET", f"{path}?{BIG}", [("Host", "shop.example")]))
        if buffered:
            # Not reading yet fills nginx's memory buffers: the rest of the
            # body must go through its temp file (a fast reader may not).
            assert wait_for(lambda: SPOOLED_RESPONSE in nginx_logs_no_error())
        response, got_size, got_sha256 = client.read_response_hashed()
        elapsed = time.monotonic() - started
        assert response.status == 200, response
        assert (got_size, got_sha256) == (size, sha256)
        if "chunked" in path:
            assert response.header("Content-Length") is None
        else:
            assert response.header("Content-Length") == str(size)
        assert client.request("GET", "/env", [("Host", "shop.example")]).status == 200
    assert (SPOOLED_RESPONSE in nginx_logs_no_error()) == buffered
    record_property("seconds", round(elapsed, 3))
    print(f"download {BIG} MiB via nginx {front} {path}: {elapsed:.2f} s")


# --- upstream keep-alive ---------------------------------------------------


def unix_connections(path):
    """The inodes of the connected sockets bound to ``path`` (maitre's side
    of each connection nginx has open to it), from /proc/net/unix."""
    inodes = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; St 03: connected.
            if len(fields) == 8 and fields[7] == path and fields[5] == "03":
                inodes.add(fields[6])
    return frozenset(inodes)


@pytest.mark.parametrize("front", ["plain", "unix"])
def test_upstream_connection_is_reused(stack, front):
    """Every request, on one client connection or on several, in any
    framing, is served over ONE nginx -> maitre connection: maitre keeps it
    open after each response (chunked ones included, unlike Waitress) and
    nginx's keepalive pool hands it back.

    Over TCP the app's REMOTE_PORT (maitre trusts no proxy there) names the
    connection; over the Unix socket, where REMOTE_PORT says nothing, the
    set of maitre's connected sockets on the path must not change."""
    if front == "unix" and not os.path.exists("/proc/net/unix"):
        pytest.skip("needs Linux's /proc/net/unix to tell Unix connections apart")

    def connection(response):
        if front == "plain":
            return peer(response)
        return unix_connections(stack.unix_path)

    seen = []
    host = [("Host", "shop.example")]
    with stack.client(front) as client:

        def request(*args):
            response = client.request(*args)
            seen.append((response.status, connection(response)))

        for _ in range(3):
            request("GET", "/env", host)
        request("POST", "/upload", host, b"x" * 100000)
        request("POST", "/streamed/upload", host, b"y" * 100000)
        request("GET", "/pieces", host)
        request("GET", "/download-chunked?1", host)
        request("GET", "/streamed/download?1", host)
        request("HEAD", "/env", host)
        request("GET", "/no-such-route", host)
        # A body the app never reads: maitre must skip it, not lose sync.
        request("POST", "/no-such-route", host, b"z" * 100000)
        request("POST", "/streamed/no-such-route", host, b"z" * 100000)
        request("GET", "/env", host)
    for _ in range(3):
        with stack.client(front) as client:
            response = client.request("GET", "/env", host)
            seen.append((response.status, connection(response)))
    assert [status for status, _ in seen] == [200] * 9 + [404] * 3 + [200] * 4
    connections = {conn for _, conn in seen}
    assert len(connections) == 1, f"{len(connections)} upstream connections: {connections}"
    (conn,) = connections
    if front == "plain":
        assert conn[0] == "127.0.0.1"
    else:
        assert conn, "no connection from nginx to the Unix socket"


# --- chunked responses -----------------------------------------------------


def test_pieces_leave_maitre_chunked(stack):
    """The premise of the next test: without nginx, maitre frames
    ``pieces`` in chunked coding (no Content-Length)."""
    with connect(stack.servers["plain"].address) as client:
        response = client.request("GET", "/pieces")
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.header("Content-Length") is None
    assert response.body == b"".join(PIECES)


@pytest.mark.parametrize("front", ["tcp", "tls", "unix", "plain"])
@pytest.mark.parametrize("prefix", ["", "/streamed"])
def test_chunked_response_passes_through_intact(stack, front, prefix):
    expected = b"".join(PIECES)
    host = [("Host", "shop.example")]
    with stack.client(front) as client:
        first = client.request("GET", f"{prefix}/pieces", host)
        # The upstream connection survived the chunked body: same peer.
        second = client.request("GET", f"{prefix}/pieces", host)
    for response in (first, second):
        assert response.status == 200
        assert response.header("Transfer-Encoding") == "chunked"
        assert response.header("Content-Length") is None
        assert response.body == expected
    if front == "plain":
        assert peer(first) == peer(second)
    # An HTTP/1.0 client gets the same bytes, delimited by the close.
    with stack.client(front) as client:
        client.send(build_request("GET", f"{prefix}/pieces", version="HTTP/1.0"))
        response = client.read_response()
        assert response.header("Transfer-Encoding") is None
        assert response.body == expected
