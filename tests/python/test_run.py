"""run() and close(): the hand-over to the native server (faked here), the
signal wake-up, SIGTERM, and Waitress's swallowing of Ctrl-C."""

import os
import select
import signal
import socket
import sys
import threading

import pytest

from conftest import needs_unix
from maitre.errors import ClientDisconnected, RequestTimeout
from maitre.filewrapper import FileWrapper
from maitre.server import create_server


def app(environ, start_response):  # pragma: no cover - never called here
    return []


def current_wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_listeners_handed_over_detached(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0", threads="3")
    port = server.effective_port
    listening = server.socket
    server.run()

    (native,) = fake_native
    assert native.app is app
    assert native.pairs == [("listen", "127.0.0.1:0"), ("threads", "3")]
    ((fd, kind, host, port_text),) = native.listeners
    assert (kind, host, port_text) == ("tcp", "127.0.0.1", port)
    assert listening.fileno() == -1  # detached: the native side owns the fd
    owned = socket.socket(fileno=fd)
    try:
        assert owned.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert owned.getsockname()[1] == int(port)
    finally:
        owned.detach()


def test_hooks(fake_native, clean_signals):
    create_server(app, listen="127.0.0.1:0").run()
    hooks = fake_native[0].hooks
    assert hooks == {
        "file_wrapper": FileWrapper,
        "client_disconnected": ClientDisconnected,
        "errors": sys.stderr,
        "request_timeout_error": RequestTimeout,
    }


def test_start_false_listens_before_hand_over(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0", _start=False)
    server.run()
    fd = fake_native[0].listeners[0][0]
    owned = socket.socket(fileno=fd)
    try:
        assert owned.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        owned.detach()


def test_multi_socket_run_hands_over_every_listener(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0 127.0.0.1:0")
    server.run()
    listeners = fake_native[0].listeners
    assert [(k, h, p) for _, k, h, p in listeners] == [
        ("tcp", h, p) for h, p in server.effective_listen
    ]
    assert len({fd for fd, *_ in listeners}) == 2


@needs_unix
def test_unix_listener_kind_and_path(fake_native, clean_signals, short_tmp):
    path = os.path.join(short_tmp, "s.sock")
    create_server(app, unix_socket=path).run()
    ((_, kind, host, port),) = fake_native[0].listeners
    assert (kind, host, port) == ("unix", "unix", path)


def test_main_thread_gets_wakeup_fd_and_sigterm(fake_native, clean_signals):
    seen = {}

    def behaviour(native, signal_fd):
        seen["fd"] = signal_fd
        seen["wakeup"] = current_wakeup_fd()
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)

    fake_native.behaviour = behaviour
    create_server(app, listen="127.0.0.1:0").run()
    assert isinstance(seen["fd"], int)
    assert seen["wakeup"] not in (-1, seen["fd"])
    assert callable(seen["sigterm"])
    # Everything is put back.
    assert current_wakeup_fd() == -1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_previous_wakeup_fd_is_restored(fake_native, clean_signals):
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        signal.set_wakeup_fd(b.fileno())
        create_server(app, listen="127.0.0.1:0").run()
        assert current_wakeup_fd() == b.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        a.close()
        b.close()


def test_program_sigterm_handler_is_kept(fake_native, clean_signals):
    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    signal.signal(signal.SIGTERM, mine)
    seen = []
    fake_native.behaviour = lambda native, fd: seen.append(signal.getsignal(signal.SIGTERM))
    create_server(app, listen="127.0.0.1:0").run()
    assert seen == [mine]
    assert signal.getsignal(signal.SIGTERM) is mine


def _deliver_and_check_wakeup(signum, seen):
    """A fake native run: raise the signal, see the wake-up byte arrive on
    the fd, let the Python handler's exception through."""

    def behaviour(native, signal_fd):
        try:
            signal.raise_signal(signum)
            # The handler runs at the next bytecode boundary (raises here).
            for _ in range(1000):  # pragma: no cover - never completes
                pass
        except BaseException as exc:
            ready, _, _ = select.select([signal_fd], [], [], 2)
            seen["byte"] = os.read(signal_fd, 16) if ready else b""
            seen["exc"] = type(exc)
            raise

    return behaviour


def test_sigterm_stops_run_quietly(fake_native, clean_signals):
    seen = {}
    fake_native.behaviour = _deliver_and_check_wakeup(signal.SIGTERM, seen)
    server = create_server(app, listen="127.0.0.1:0")
    assert server.run() is None
    assert seen == {"byte": bytes([signal.SIGTERM]), "exc": SystemExit}
    assert fake_native[0].close_calls >= 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ctrl_c_stops_run_quietly(fake_native, clean_signals):
    seen = {}
    fake_native.behaviour = _deliver_and_check_wakeup(signal.SIGINT, seen)
    assert create_server(app, listen="127.0.0.1:0").run() is None
    assert seen == {"byte": bytes([signal.SIGINT]), "exc": KeyboardInterrupt}


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_run_swallows_interrupts(fake_native, clean_signals, exc):
    def behaviour(native, fd):
        raise exc()

    fake_native.behaviour = behaviour
    server = create_server(app, listen="127.0.0.1:0 127.0.0.1:0")
    assert server.run() is None
    assert fake_native[0].close_calls >= 1


def test_other_errors_propagate(fake_native, clean_signals):
    def behaviour(native, fd):
        raise RuntimeError("boom")

    fake_native.behaviour = behaviour
    with pytest.raises(RuntimeError, match="boom"):
        create_server(app, listen="127.0.0.1:0").run()
    assert current_wakeup_fd() == -1


def test_other_thread_gets_no_signal_fd(fake_native, clean_signals):
    seen = []
    fake_native.behaviour = lambda native, fd: seen.append(
        (fd, signal.getsignal(signal.SIGTERM))
    )
    server = create_server(app, listen="127.0.0.1:0")
    worker = threading.Thread(target=server.run)
    worker.start()
    worker.join(10)
    assert seen == [(None, signal.SIG_DFL)]
    assert current_wakeup_fd() == -1


def test_close_from_another_thread_ends_run(fake_native, clean_signals):
    started = threading.Event()

    def behaviour(native, fd):
        started.set()
        assert native.closed.wait(10)

    fake_native.behaviour = behaviour
    server = create_server(app, listen="127.0.0.1:0")
    worker = threading.Thread(target=server.run)
    worker.start()
    assert started.wait(10)
    server.close()
    worker.join(10)
    assert not worker.is_alive()
    assert fake_native[0].close_calls >= 1


def test_run_after_close_returns_at_once(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0")
    server.close()
    server.run()
    assert list(fake_native) == []


def test_second_run_does_nothing(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0")
    server.run()
    server.run()
    assert len(fake_native) == 1
    assert fake_native[0].run_calls and len(fake_native[0].run_calls) == 1


def test_close_after_run_goes_to_native(fake_native, clean_signals):
    server = create_server(app, listen="127.0.0.1:0")
    server.run()
    calls = fake_native[0].close_calls
    server.close()
    assert fake_native[0].close_calls == calls + 1
