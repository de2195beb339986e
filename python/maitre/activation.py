"""Socket activation: listening sockets handed over by a service manager.

systemd (and compatible managers: s6, launchers, ``systemfd``) bind the
sockets themselves and start the server with them open as file descriptors
3, 4, ... and the environment ``LISTEN_PID`` (the pid they are meant for)
and ``LISTEN_FDS`` (how many). When both say so, those sockets are the
listeners and ``listen``/``host``/``port``/``unix_socket``/``sockets`` are
ignored: the service manager owns the addresses. The variables are then
removed from the environment, so that a program this process starts does
not take descriptors that are not its own.
"""

import logging
import os
import socket

__all__ = ["FIRST_FD", "ADDRESS_SETTINGS", "listen_fds", "take"]

logger = logging.getLogger("maitre")

#: sd_listen_fds(3): the first passed descriptor.
FIRST_FD = 3

#: Settings that say where to listen; activated sockets replace them all.
ADDRESS_SETTINGS = ("listen", "host", "port", "unix_socket", "sockets")

_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

_FAMILIES = tuple(
    family
    for family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", None))
    if family is not None
)


def listen_fds(environ=None, pid=None):
    """The number of descriptors passed to this process (0 when none, or
    when they were meant for another pid). Malformed values count as none,
    as sd_listen_fds does not start a server on a guess."""
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    try:
        if int(environ.get("LISTEN_PID", "")) != pid:
            return 0
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return 0
    return max(count, 0)


def take(kw):
    """``(kw, sockets)``: when sockets were passed to this process, ``kw``
    without the address settings and the sockets (the environment variables
    are removed); otherwise ``kw`` unchanged and None."""
    count = listen_fds()
    if not count:
        return kw, None
    for name in _ENV:
        os.environ.pop(name, None)
    sockets = [_adopt(fd) for fd in range(FIRST_FD, FIRST_FD + count)]
    ignored = sorted(name for name in ADDRESS_SETTINGS if name in kw)
    kw = {name: value for name, value in kw.items() if name not in ADDRESS_SETTINGS}
    note = f"; ignoring {', '.join(ignored)}" if ignored else ""
    logger.info("Using %d socket(s) passed by the service manager (LISTEN_FDS)%s", count, note)
    return kw, sockets


def _adopt(fd):
    """The passed descriptor ``fd`` as a socket object; it must be a stream
    socket of a family maitre serves."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"socket activation: fd {fd} is not a socket ({exc})") from exc
    if sock.type != socket.SOCK_STREAM or sock.family not in _FAMILIES:
        sock.detach()  # not ours to close
        raise ValueError(
            f"socket activation: fd {fd} is not a TCP or Unix stream socket"
        )
    # Children started with exec must not inherit it; forked workers still do.
    sock.set_inheritable(False)
    return sock
