"""Listening sockets and the server objects ``create_server`` returns.

Python binds every listener (so that errors such as "address in use" surface
from ``create_server``, and ``effective_port`` is known at once); ``run()``
hands the sockets to the native server, which serves until ``close()`` or a
signal handler raises.
"""

import errno
import logging
import os
import signal
import socket
import stat
import sys
import threading

from . import activation, master  # socket activation; forked workers
from .adjustments import Adjustments
from .errors import ClientDisconnected, RequestTimeout
from .filewrapper import FileWrapper
from .observe import Observer

__all__ = [
    "BaseWSGIServer",
    "MultiSocketServer",
    "TcpWSGIServer",
    "UnixWSGIServer",
    "WSGIServer",
    "create_server",
]

logger = logging.getLogger("maitre")

WINDOWS = sys.platform.startswith("win")
HAS_UNIX = hasattr(socket, "AF_UNIX")

# Never equal to a socket family where Unix sockets do not exist.
_AF_UNIX = getattr(socket, "AF_UNIX", object())

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

NONE_APP = (
    'The "app" passed to ``create_server`` was ``None``.  You forgot '
    "to return a WSGI app within your application."
)


def create_server(
    application,
    map=None,
    _start=True,  # test shim: False binds without listen()
    _sock=None,  # test shim: a socket to use instead of a new one
    _dispatcher=None,  # accepted for Waitress compatibility; unused
    **kw,
):
    """Validate the settings and bind every listener now. Returns the one
    server object, or a ``MultiSocketServer`` when there are several."""
    if application is None:
        raise ValueError(NONE_APP)
    # --- socket activation (maitre.activation): passed sockets win ---
    kw, activated = activation.take(kw)
    adj = Adjustments(**kw)
    if activated:
        adj.sockets = activated
    # --- end socket activation ---
    if map is None:
        map = {}
    common = dict(dispatcher=_dispatcher, adj=adj)

    if adj.unix_socket and HAS_UNIX:
        sockinfo = (socket.AF_UNIX, socket.SOCK_STREAM, None, None)
        return UnixWSGIServer(application, map, _start, _sock, sockinfo=sockinfo, **common)

    servers = []
    try:
        if not adj.sockets:
            for sockinfo in adj.listen:
                server = TcpWSGIServer(
                    application, map, _start, _sock, sockinfo=sockinfo, **common
                )
                servers.append(server)
        for sock in adj.sockets:
            sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
            cls = UnixWSGIServer if sock.family == _AF_UNIX else TcpWSGIServer
            server = cls(
                application, map, _start, sock, sockinfo=sockinfo, bind_socket=False, **common
            )
            servers.append(server)
    except BaseException:
        # Do not leave earlier listeners bound when a later one fails.
        for server in servers:
            server._close_own_socket()
        raise

    if len(servers) == 1:
        return servers[0]
    effective_listen = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(map, adj, effective_listen, _dispatcher, _log_info, _servers=servers)


def _log_info(message, type="info"):
    """Log ``message`` on the ``maitre`` logger (INFO unless ``type`` says)."""
    logger.log(_LEVELS.get(type, logging.INFO), message)


class _Serving:
    """Running the native server over some bound sockets, once.

    ``run()`` blocks until ``close()`` (from any thread) or until a signal
    handler raises KeyboardInterrupt or SystemExit, which it swallows, as
    Waitress's ``run()`` does. After ``close()``, ``run()`` returns at once.
    """

    def _init_serving(self):
        self._lock = threading.Lock()
        self._native = None
        self._closed = False

    def _listeners(self):
        raise NotImplementedError  # pragma: no cover

    def _own_servers(self):
        raise NotImplementedError  # pragma: no cover

    def run(self):
        with self._lock:
            if self._closed or self._native is not None:
                return
            observer = Observer(self.adj)  # access log, metrics (observe.py)
            server_class = _native_server_class()
            listeners = self._listeners()
            # The native server owns the descriptors from here on, even if
            # its constructor fails: this object has nothing left to close.
            self._closed = True
            self._native = server_class(
                self.application, list(self.adj._pairs), listeners, _hooks(observer.metrics)
            )
        with observer:
            _run_native(self._native)

    def close(self):
        with self._lock:
            native = self._native
            closed, self._closed = self._closed, True
        if native is not None:
            native.close()
        elif not closed:
            for server in self._own_servers():
                server.socket.close()


class BaseWSGIServer(_Serving):
    """One listening socket. ``effective_host``/``effective_port`` say where
    it really listens (for TCP the numeric address and the bound port, as
    strings; for Unix ``"unix"`` and the path)."""

    #: The listener kind in the native contract: "tcp" or "unix".
    kind = None

    def __init__(
        self,
        application,
        map=None,
        _start=True,
        _sock=None,
        dispatcher=None,
        adj=None,
        sockinfo=None,
        bind_socket=True,
        **kw,
    ):
        if adj is None:
            adj = Adjustments(**kw)
        if map is None:
            map = {}
        if sockinfo is None:
            sockinfo = adj.listen[0]
        self._init_serving()
        self.application = application
        self.adj = adj
        self.sockinfo = sockinfo
        self.family = sockinfo[0]
        self.socktype = sockinfo[1]
        self.task_dispatcher = dispatcher
        self._map = map
        self.server_name = adj.server_name
        self.accepting = False
        self._owns_socket = _sock is None
        self.socket = _sock if _sock is not None else self._new_socket()
        try:
            self.socket.setblocking(False)
            if not WINDOWS:
                # Rebinding a port in TIME_WAIT after a restart must work.
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind_socket:
                self.bind_server_socket()
            self.effective_host, self.effective_port = self.getsockname()
            if _start:
                self.accept_connections()
        except BaseException:
            self._close_own_socket()
            raise
        map[self.socket.fileno()] = self

    def _new_socket(self):
        sock = socket.socket(self.family, self.socktype)
        if self.family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            except BaseException:
                sock.close()
                raise
        return sock

    def _close_own_socket(self):
        if self._owns_socket:
            self.socket.close()

    def bind_server_socket(self):
        raise NotImplementedError  # pragma: no cover

    def getsockname(self):
        raise NotImplementedError  # pragma: no cover

    def accept_connections(self):
        self.socket.listen(self.adj.backlog)
        self.accepting = True

    def print_listen(self, format_str):
        self.log_info(format_str.format(self.effective_host, self.effective_port))

    def log_info(self, message, type="info"):
        _log_info(message, type)

    def _own_servers(self):
        return [self]

    def _listeners(self):
        return _detach_listeners([self])


class TcpWSGIServer(BaseWSGIServer):
    kind = "tcp"

    def bind_server_socket(self):
        self.socket.bind(self.sockinfo[3])

    def accept_connections(self):
        if self._owns_socket:
            _tune_listener(self.socket, self.adj.socket_options)
        super().accept_connections()

    def getsockname(self):
        return socket.getnameinfo(
            self.socket.getsockname(), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        )


def _tune_listener(sock, socket_options):
    """Options for a TCP listener this server created (a socket handed over
    by the caller is left as it is).

    ``socket_options`` (TCP_NODELAY): Waitress sets them on every accepted
    socket; Linux copies them from the listener, which saves a system call
    per connection (the engine checks the first accepted socket for
    TCP_NODELAY and sets it itself otherwise).

    TCP_DEFER_ACCEPT (Linux): a connection is handed over once its first
    bytes have arrived, so the first read finds the request instead of
    waiting for another readiness event. A client that stays silent is
    handed over after about a second all the same (then ``channel_timeout``
    applies as usual), and a probe that connects and leaves never wakes the
    server at all."""
    for level, name, value in socket_options:
        sock.setsockopt(level, name, value)
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)


class UnixWSGIServer(BaseWSGIServer):
    kind = "unix"

    def __init__(self, application, map=None, _start=True, _sock=None, sockinfo=None, **kw):
        if sockinfo is None:
            sockinfo = (socket.AF_UNIX, socket.SOCK_STREAM, None, None)
        super().__init__(application, map, _start, _sock, sockinfo=sockinfo, **kw)

    def bind_server_socket(self):
        path = self.adj.unix_socket
        remove_stale_unix_socket(path)
        self.socket.bind(path)
        if os.path.exists(path):
            os.chmod(path, self.adj.unix_socket_perms)

    def getsockname(self):
        name = self.socket.getsockname()
        if isinstance(name, bytes):  # an abstract-namespace socket
            name = os.fsdecode(name)
        return ("unix", name)


# Waitress's name for the TCP server class.
WSGIServer = TcpWSGIServer


def remove_stale_unix_socket(path):
    """Delete ``path`` if it is a socket (left by an earlier run); leave any
    other kind of file alone (bind will then fail)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return
    if stat.S_ISSOCK(mode):
        try:
            os.remove(path)
        except OSError:
            pass  # someone else removed it first


class MultiSocketServer(_Serving):
    """Several listeners served by one native server and one thread pool."""

    def __init__(
        self,
        map=None,
        adj=None,
        effective_listen=None,
        dispatcher=None,
        log_info=None,
        _servers=(),
    ):
        self._init_serving()
        self.map = map
        self.adj = adj
        self.effective_listen = effective_listen
        self.task_dispatcher = dispatcher
        self.log_info = log_info or _log_info
        self._servers = list(_servers)
        self.application = self._servers[0].application if self._servers else None

    def print_listen(self, format_str):
        # Waitress brackets IPv6 hosts only here, not for a single listener.
        for host, port in self.effective_listen:
            if ":" in host:
                host = f"[{host}]"
            self.log_info(format_str.format(host, port))

    def _own_servers(self):
        return self._servers

    def _listeners(self):
        return _detach_listeners(self._servers)


def _detach_listeners(servers):
    """The listeners in the native contract's shape; the native server owns
    the file descriptors from here on."""
    listeners = []
    for server in servers:
        if not server.accepting:
            server.accept_connections()
    for server in servers:
        fd = server.socket.detach()
        listeners.append((fd, server.kind, server.effective_host, str(server.effective_port)))
    return listeners


def _hooks(metrics=None):
    hooks = {
        "file_wrapper": FileWrapper,
        "client_disconnected": ClientDisconnected,
        "errors": sys.stderr,
        "request_timeout_error": RequestTimeout,
    }
    # --- workers (maitre.master): a forked worker's retire pipe ---
    hooks.update(master.worker_hooks())
    # --- end workers ---
    if metrics is not None:
        hooks["metrics"] = metrics  # the slot to count into (observe.py)
    return hooks


def _native_server_class():
    from . import _maitre

    return _maitre.Server


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


class _SignalWakeup:
    """In the main thread: a socketpair whose write end receives a byte for
    each signal (``signal.set_wakeup_fd``), so the native loop wakes up and
    runs Python's handlers; and SIGTERM raising SystemExit, so that it stops
    the server like Ctrl-C does. Both are restored on exit."""

    def __init__(self):
        self.read_fd = None
        self._pair = None
        self._old_wakeup = None
        self._old_sigterm = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._pair = (reader, writer)
        self._old_wakeup = signal.set_wakeup_fd(writer.fileno())
        self.read_fd = reader.fileno()
        sigterm = getattr(signal, "SIGTERM", None)
        # Only replace the default action: a handler the program installed
        # (or SIG_IGN) is its business.
        if sigterm is not None and signal.getsignal(sigterm) == signal.SIG_DFL:
            self._old_sigterm = signal.signal(sigterm, _raise_system_exit)
        return self

    def __exit__(self, *exc_info):
        if self._pair is None:
            return False
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        signal.set_wakeup_fd(self._old_wakeup)
        for sock in self._pair:
            sock.close()
        return False


# Workers still inside an app when a server stopped (after its grace period).
stuck_workers = 0


def _run_native(native):
    global stuck_workers
    try:
        with _SignalWakeup() as wakeup:
            native.run(wakeup.read_fd)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        native.close()
        stuck_workers += getattr(native, "stuck_workers", 0)
