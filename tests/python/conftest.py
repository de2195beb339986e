import shutil
import signal
import socket
import tempfile
import threading

import pytest


def _ipv6_loopback_works():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6_LOOPBACK = _ipv6_loopback_works()

needs_ipv6 = pytest.mark.skipif(not HAS_IPV6_LOOPBACK, reason="no IPv6 loopback")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


@pytest.fixture
def processes():
    """A list for the test to put server processes in; each is killed at the end."""
    started = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
def short_tmp():
    """A directory with a short path: Unix socket paths are limited to ~100
    bytes, which pytest's tmp_path can exceed."""
    path = tempfile.mkdtemp(prefix="mt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clean_signals():
    """SIGTERM at its default action and no wakeup fd, as in a fresh
    process; whatever was there is put back afterwards."""
    old_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    old_wakeup = signal.set_wakeup_fd(-1)
    yield
    signal.signal(signal.SIGTERM, old_term)
    signal.set_wakeup_fd(old_wakeup)


class FakeNative:
    """Stands in for ``maitre._maitre.Server``: records what it is given."""

    instances = None

    def __init__(self, app, pairs, listeners, hooks):
        self.app = app
        self.pairs = pairs
        self.listeners = listeners
        self.hooks = hooks
        self.closed = threading.Event()
        self.close_calls = 0
        self.run_calls = []
        self.instances.append(self)

    def close(self):
        self.close_calls += 1
        self.closed.set()


@pytest.fixture
def fake_native(monkeypatch):
    """Replaces the native server class; yields the list of instances made.
    Its ``behaviour(native, signal_fd)``, when set, is what ``run`` does."""
    import maitre.server

    class Recorder(list):
        behaviour = None

    made = Recorder()

    class Fake(FakeNative):
        instances = made

        def run(self, signal_fd):
            self.run_calls.append(signal_fd)
            if made.behaviour is not None:
                return made.behaviour(self, signal_fd)
            return None

    monkeypatch.setattr(maitre.server, "_native_server_class", lambda: Fake)
    yield made
    for native in made:
        for fd, *_ in native.listeners:
            try:
                socket.socket(fileno=fd).close()
            except OSError:
                pass


@pytest.fixture(autouse=True)
def no_stuck_workers():
    """No test may leave an app thread running past its server's stop: the
    count is process-wide, and maitre-serve's runner ends the process when
    its own server leaves one."""
    from maitre import server

    before = server.stuck_workers
    yield
    assert server.stuck_workers == before, "a server stopped with app threads still running"
