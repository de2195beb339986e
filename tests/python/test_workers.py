"""Worker processes (``workers``, ``max_requests``), the master's signals and
socket activation, with real processes: ``maitre-serve`` as a master, its
forked workers, real signals and real client connections.

Every wait polls for a condition with a deadline (``GUARD``); nothing sleeps
to let a race settle. A request "fails" when it raises (refused, reset, EOF
before a full response, timeout) or answers anything but 200.
"""

import collections
import os
import queue
import re
import signal
import socket
import sys
import textwrap
import threading
import time

import pytest

import maitre
from apps.live import GUARD, Process, connect, wait_for
from maitre import master, runner
from maitre.activation import listen_fds

pytestmark = pytest.mark.skipif(not master.CAN_FORK, reason="worker processes need fork()")

MAITRE_SERVE = os.path.join(os.path.dirname(sys.executable), "maitre-serve")
APP = "apps.workers_app:app"
BOOT_RE = r"Booting worker with pid (\d+)"


# -- harness -----------------------------------------------------------------


class Served:
    """``maitre-serve --listen=127.0.0.1:0 ARGS`` with a master: its pid,
    port, stderr log and worker pids (the master's children)."""

    def __init__(self, *args, env=None, app=APP, argv=None):
        if argv is None:
            argv = [MAITRE_SERVE, "--listen=127.0.0.1:0", *args, app]
        self.process = Process(argv, env=env)
        self.pid = self.process.proc.pid

    def serving(self):
        _, self.port = self.process.wait_serving()
        return self

    def log(self):
        """Every stderr line so far (without waiting)."""
        proc = self.process
        while True:
            try:
                line = proc.lines.get_nowait()
            except queue.Empty:
                return proc.stderr
            if line is None:
                proc.lines.put(None)
                return proc.stderr
            proc.stderr.append(line)

    def wait_log(self, pattern, count=1, timeout=GUARD):
        """The matches of ``pattern`` in the log, once there are ``count``."""
        found = []

        def enough():
            found[:] = [m for m in map(re.compile(pattern).search, self.log()) if m]
            return len(found) >= count

        assert wait_for(enough, timeout), f"fewer than {count} {pattern!r} in {self.log()!r}"
        return found

    def children(self):
        return children(self.pid)

    def wait_children(self, predicate, timeout=GUARD):
        """The worker pids once ``predicate(pids)`` holds (the master forks
        and reaps them; a zombie not reaped yet still counts)."""
        seen = []

        def check():
            seen[:] = [self.children()]
            return predicate(seen[0])

        assert wait_for(check, timeout), f"workers now {seen[0]}; log {self.log()!r}"
        return seen[0]

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout=GUARD):
        return self.process.proc.wait(timeout)

    def kill(self):
        pids = children(self.pid) if self.process.proc.poll() is None else set()
        self.process.kill()
        for pid in pids:  # a test that failed half-way must not leave workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def serve():
    started = []

    def start(*args, **kw):
        served = Served(*args, **kw)
        started.append(served)
        return served.serving()

    yield start
    for served in started:
        served.kill()


def children(pid):
    """The pids of ``pid``'s children (Linux /proc)."""
    path = f"/proc/{pid}/task/{pid}/children"
    if not os.path.exists(f"/proc/{pid}"):
        return set()
    if not os.path.exists(path):
        pytest.skip("no /proc/PID/task/PID/children here")
    try:
        with open(path) as file:
            return {int(word) for word in file.read().split()}
    except (FileNotFoundError, ProcessLookupError):
        return set()


def alive(pid):
    """Whether ``pid`` still runs (a zombie waiting for its parent, or for
    init once the master is gone, has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def get(port, path="/", timeout=GUARD):
    """One request on a fresh connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise EOFError(f"no complete response: {data!r}")
    return int(head.split()[1]), body


class Load:
    """Client threads sending requests on fresh connections to ``/`` (which
    answers the worker's pid), until ``stop()`` or ``total`` requests."""

    def __init__(self, port, threads=4, total=None):
        self.port = port
        self.total = total
        self.sent = 0
        self.by_pid = collections.Counter()
        self.failures = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _ticket(self):
        with self.lock:
            if self.stopped.is_set() or (self.total is not None and self.sent >= self.total):
                return False
            self.sent += 1
            return True

    def _run(self):
        while self._ticket():
            try:
                status, body = get(self.port)
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                outcome = int(body) if status == 200 else f"status {status}: {body!r}"
            with self.lock:
                if isinstance(outcome, int):
                    self.by_pid[outcome] += 1
                else:
                    self.failures.append(outcome)

    def done(self):
        return sum(self.by_pid.values()) + len(self.failures)

    def pids(self):
        with self.lock:
            return set(self.by_pid)

    def stop(self, timeout=60):
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a client thread is stuck"
        return self


# -- workers ----------------------------------------------------------------


def test_three_workers_answer_from_three_pids(serve):
    served = serve("--workers=3")
    booted = {int(m.group(1)) for m in served.wait_log(BOOT_RE, 3)}
    assert served.wait_children(lambda pids: len(pids) == 3) == booted
    assert served.pid not in booted
    # Which worker accepts a connection is the kernel's choice: keep
    # connections open (so a worker busy with one is not always the winner)
    # until every worker has answered.
    seen, clients = set(), []
    deadline = time.monotonic() + GUARD
    try:
        while seen != booted and time.monotonic() < deadline:
            client = connect(("127.0.0.1", served.port))
            clients.append(client)
            seen.add(int(client.request("GET", "/").body))
    finally:
        for client in clients:
            client.close()
    assert seen == booted


class PinnedClient(threading.Thread):
    """One keep-alive connection, its serving pid learnt from its first
    response, then requests in a loop until stopped or the first failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = connect(("127.0.0.1", port))
        self.pid = int(self.client.request("GET", "/").body)
        self.ok = 0
        self.failure = None
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.is_set():
                response = self.client.request("GET", "/")
                assert response.status == 200 and int(response.body) == self.pid, response
                self.ok += 1
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.client.close()


def pinned_clients(port, want=8, cap=60):
    """``want`` connections spread over at least two workers."""
    clients = []
    while len(clients) < cap:
        clients.append(PinnedClient(port))
        pids = {c.pid for c in clients}
        if len(clients) >= want and len(pids) >= 2:
            return clients
    raise AssertionError(f"{cap} connections all served by {pids}")


def test_killed_worker_is_replaced_and_other_connections_never_fail(serve):
    """kill -9 one worker under load: a new worker replaces it, and requests
    on keep-alive connections served by the other workers all succeed. Only
    the killed worker's own connections may fail (they died with it)."""
    served = serve("--workers=3", "--threads=2")
    first = served.wait_children(lambda pids: len(pids) == 3)
    clients = pinned_clients(served.port)
    victim = collections.Counter(c.pid for c in clients).most_common(1)[0][0]
    for client in clients:
        client.start()
    others = [c for c in clients if c.pid != victim]
    assert wait_for(lambda: all(c.ok >= 10 for c in others))

    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    now = served.wait_children(lambda pids: victim not in pids and len(pids) == 3)
    (newcomer,) = now - first
    served.wait_log(rf"Worker with pid {victim} exited unexpectedly \(killed by SIGKILL\)")
    # The replacement serves: fresh connections until it answers.
    assert wait_for(lambda: int(get(served.port)[1]) == newcomer, timeout=GUARD, interval=0)
    respawned = time.monotonic() - killed_at
    before = {c: c.ok for c in others}
    assert wait_for(lambda: all(c.ok >= before[c] + 20 for c in others))
    for client in clients:
        client.stopped.set()
    for client in clients:
        client.join(GUARD)
    assert [c.failure for c in others] == [None] * len(others)
    # The killed worker's own connections did break (the kill was real).
    assert all(c.failure is not None for c in clients if c.pid == victim)
    print(f"\nkill -9 -> replacement serving in {respawned * 1000:.0f} ms")


def test_hup_replaces_every_worker_without_failing_a_request(serve):
    served = serve("--workers=3")
    old = served.wait_children(lambda pids: len(pids) == 3)
    load = Load(served.port, threads=4)
    try:
        assert wait_for(lambda: load.done() >= 200)
        served.signal(signal.SIGHUP)
        new = served.wait_children(lambda pids: len(pids) == 3 and not pids & old)
        # The new workers serve, the old ones are gone.
        assert wait_for(lambda: load.pids() & new)
        served.wait_log(r"Reload: new workers ready")
        done = load.done()
        assert wait_for(lambda: load.done() >= done + 200)
    finally:
        load.stop()
    assert load.failures == []
    assert load.pids() & old and load.pids() & new
    assert not any(alive(pid) for pid in old)


def test_hup_loads_the_new_code(serve, short_tmp):
    """maitre-serve's master never imports the app: each new worker does, so
    a reload serves the code as it is now on disk."""
    path = os.path.join(short_tmp, "reloaded.py")
    source = textwrap.dedent(
        """
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"VERSION"]
        """
    )
    with open(path, "w") as file:
        file.write(source.replace("VERSION", "one"))
    env = {"PYTHONPATH": short_tmp, "PYTHONDONTWRITEBYTECODE": "1"}
    served = serve("--workers=2", env=env, app="reloaded:app")
    assert get(served.port) == (200, b"one")
    old = served.wait_children(lambda pids: len(pids) == 2)
    with open(path, "w") as file:
        file.write(source.replace("VERSION", "two"))
    served.signal(signal.SIGHUP)
    new = served.wait_children(lambda pids: len(pids) == 2 and not pids & old)
    assert wait_for(lambda: not any(alive(pid) for pid in old))
    assert get(served.port) == (200, b"two")
    # Code that no longer imports: the reload is abandoned, nothing stops.
    with open(path, "w") as file:
        file.write("raise ImportError('broken on purpose')\n")
    served.signal(signal.SIGHUP)
    served.wait_log(r"failed to boot \(exit status 3\); reload abandoned")
    assert served.wait_children(lambda pids: pids == new) == new
    assert get(served.port) == (200, b"two")
    assert served.process.proc.poll() is None


def test_ttin_adds_and_ttou_removes_a_worker_never_below_one(serve):
    served = serve("--workers=2")
    served.wait_children(lambda pids: len(pids) == 2)
    served.signal(signal.SIGTTIN)
    served.wait_log(r"SIGTTIN: 3 worker\(s\) wanted")
    served.wait_children(lambda pids: len(pids) == 3)
    for count in (1, 2, 3):  # one at a time: pending signals coalesce
        served.signal(signal.SIGTTOU)
        served.wait_log(r"SIGTTOU: \d+ worker\(s\) wanted", count)
    wanted = [m.group(1) for m in served.wait_log(r"SIGTTOU: (\d+) worker", 3)]
    assert wanted == ["2", "1", "1"]
    (last,) = served.wait_children(lambda pids: len(pids) == 1)
    served.wait_log(r"Worker with pid \d+ stopped", 2)
    assert served.children() == {last}
    assert get(served.port) == (200, str(last).encode())


def test_term_drains_a_running_request_then_exits_zero(serve):
    served = serve("--workers=2", "--graceful-timeout=10")
    served.wait_children(lambda pids: len(pids) == 2)
    with connect(("127.0.0.1", served.port)) as client:
        client.send(b"GET /sleep?2 HTTP/1.1\r\nHost: x\r\n\r\n")
        (match,) = served.wait_log(r"sleeping in (\d+)")
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        response = client.read_response()
    assert response.status == 200
    assert response.body == match.group(1).encode()
    assert served.wait_exit(10) == 0
    assert time.monotonic() - started < 10
    assert "Traceback" not in "\n".join(served.process.rest())


def test_second_term_stops_at_once(serve):
    served = serve("--workers=2", "--graceful-timeout=30")
    workers = served.wait_children(lambda pids: len(pids) == 2)
    with connect(("127.0.0.1", served.port)) as client:
        client.send(b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n")
        served.wait_log(r"sleeping in (\d+)")
        served.signal(signal.SIGTERM)
        served.wait_log(r"SIGTERM: draining")
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        assert served.wait_exit(5) == 0
        assert time.monotonic() - started < 3
        assert client.closed_by_server(5)  # the 30 s request was cut
    assert wait_for(lambda: not any(alive(pid) for pid in workers))


def test_master_death_stops_the_workers(serve):
    """No orphan keeps serving: the workers see the master's pipe close."""
    served = serve("--workers=2")
    workers = served.wait_children(lambda pids: len(pids) == 2)
    served.signal(signal.SIGKILL)
    served.wait_exit()
    assert wait_for(lambda: not any(alive(pid) for pid in workers))


def test_workers_that_cannot_import_the_app_stop_the_master(serve):
    served = Served("--workers=2", app="apps.no_such_module:app")
    try:
        started = time.monotonic()
        status = served.wait_exit()
        elapsed = time.monotonic() - started
        log = "\n".join(served.process.rest())
    finally:
        served.kill()
    assert status == 1
    assert elapsed < 5
    assert "No module named 'apps.no_such_module'" in log
    assert re.search(r"Worker with pid \d+ failed to boot \(exit status 3\)", log)
    assert "the application could not be loaded" in log
    assert len(re.findall(BOOT_RE, log)) == 2  # no respawn storm


PASTE = textwrap.dedent(
    """
    import logging, sys
    from paste.deploy import loadserver
    from apps.workers_app import app
    logging.basicConfig(level=logging.INFO)
    sys.exit(loadserver("config:" + sys.argv[1])(app))
    """
)


def test_paste_deploy_runs_a_master(tmp_path):
    pytest.importorskip("paste.deploy")
    ini = tmp_path / "server.ini"
    ini.write_text(
        "[server:main]\nuse = egg:maitre#main\nlisten = 127.0.0.1:0\nworkers = 2\n"
    )
    served = Served(argv=[sys.executable, "-c", PASTE, str(ini)])
    try:
        served.serving()
        booted = {int(m.group(1)) for m in served.wait_log(BOOT_RE, 2)}
        assert served.wait_children(lambda pids: len(pids) == 2) == booted
        assert int(get(served.port)[1]) in booted
        served.signal(signal.SIGTERM)
        assert served.wait_exit() == 0
    finally:
        served.kill()


# -- recycling ----------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0, 20])
def test_max_requests_recycles_workers_without_a_failed_request(serve, jitter):
    """5,000 requests, each on a fresh connection, over 2 workers that retire
    after 100 (+ up to ``jitter``) requests: none fails, and each retired
    worker served its quota (plus at most the requests already running when
    it reached it, one per client thread)."""
    served = serve("--workers=2", "--max-requests=100", f"--max-requests-jitter={jitter}")
    served.wait_children(lambda pids: len(pids) == 2)
    threads = 4
    started = time.monotonic()
    load = Load(served.port, threads=threads, total=5000)
    assert wait_for(lambda: load.done() == 5000, timeout=60)
    load.stop()
    elapsed = time.monotonic() - started
    assert load.failures == []
    survivors = served.wait_children(lambda pids: len(pids) == 2)
    retired = {pid: n for pid, n in load.by_pid.items() if pid not in survivors}
    assert len(retired) >= 5000 // (100 + jitter) - 4
    counts = sorted(retired.values())
    assert counts[0] >= 100
    assert counts[-1] <= 100 + jitter + threads
    if jitter:
        assert counts[-1] - counts[0] >= 5  # the limits really differ
    served.wait_log(r"retired after max_requests", len(retired))
    assert not [line for line in served.log() if "unexpectedly" in line]
    print(
        f"\nmax_requests=100 jitter={jitter}: {len(load.by_pid)} workers"
        f" over 5000 requests in {elapsed:.1f} s"
    )


# -- errors before anything binds --------------------------------------------


@pytest.mark.parametrize("setting", [{"workers": 2}, {"max_requests": "10"}])
def test_no_fork_is_a_value_error_before_binding(monkeypatch, setting):
    monkeypatch.setattr(master, "CAN_FORK", False)
    bound = []
    with pytest.raises(ValueError, match="os.fork"):
        maitre.serve(lambda e, s: [], _server=lambda *a, **k: bound.append(a), **setting)
    assert bound == []
    with pytest.raises(ValueError, match="os.fork"):
        runner.run(["maitre-serve", "--workers=3", APP], _serve=lambda *a, **k: bound.append(a))
    assert bound == []


def test_one_worker_without_max_requests_needs_no_master(monkeypatch):
    monkeypatch.setattr(master, "CAN_FORK", False)
    assert not master.wanted({"workers": "1", "max_requests": 0})
    assert not master.wanted({})


def test_a_master_needs_the_main_thread():
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_error(master.wanted, {"workers": 2})))
    thread.start()
    thread.join(GUARD)
    assert "main thread" in str(errors[0])


def _error(function, *args):
    try:
        function(*args)
    except ValueError as exc:
        return exc
    return None


# -- socket activation --------------------------------------------------------

# Binds the socket a service manager would, as fd 3, and execs maitre-serve
# with LISTEN_PID set to its own pid (exec keeps it).
ACTIVATE = textwrap.dedent(
    """
    import os, socket, sys
    where = sys.argv[1]
    if where.startswith("/"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(where)
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        print("activation port", sock.getsockname()[1], file=sys.stderr, flush=True)
    sock.listen(16)
    if sock.fileno() == 3:
        os.set_inheritable(3, True)
    else:
        os.dup2(sock.fileno(), 3)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "1"
    os.execv(sys.argv[2], sys.argv[2:])
    """
)


@pytest.fixture
def activated():
    started = []

    def start(where, *args):
        process = Process([sys.executable, "-c", ACTIVATE, where, MAITRE_SERVE, *args, APP])
        started.append(process)
        return process

    yield start
    for process in started:
        for pid in children(process.proc.pid) if process.proc.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
        process.kill()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation_tcp_wins_over_listen(activated, workers):
    # Held (bound, not listening) for the whole test: binding it would fail,
    # and nobody else can take it, so a refused connection is meaningful.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    ignored = holder.getsockname()[1]
    try:
        check_activation(activated, workers, ignored)
    finally:
        holder.close()


def check_activation(activated, workers, ignored):
    proc = activated("tcp", f"--listen=127.0.0.1:{ignored}", f"--workers={workers}")
    port = int(proc.wait_line(r"activation port (\d+)").group(1))
    proc.wait_line(r"Using 1 socket\(s\) passed by the service manager .*ignoring listen")
    assert proc.wait_serving() == ("127.0.0.1", port)
    status, pid = get(port)
    serving = {proc.proc.pid} if workers == "1" else children(proc.proc.pid)
    assert status == 200 and int(pid) in serving
    # The variables are gone: an exec'd child would not take fd 3.
    assert get(port, "/env?LISTEN_FDS") == (200, b"-")
    assert get(port, "/env?LISTEN_PID") == (200, b"-")
    with pytest.raises(ConnectionRefusedError):
        get(ignored)
    assert proc.stop(signal.SIGTERM) == 0


def test_socket_activation_unix(activated, short_tmp):
    path = os.path.join(short_tmp, "activated.sock")
    proc = activated(path, "--workers=2")
    assert proc.wait_line(r"Serving on http://unix:(\S+)$").group(1) == path
    with connect(path) as client:
        response = client.request("GET", "/")
    assert response.status == 200 and int(response.body) in children(proc.proc.pid)
    assert proc.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 2),
        ({"LISTEN_PID": "43", "LISTEN_FDS": "2"}, 0),  # meant for another process
        ({"LISTEN_FDS": "2"}, 0),
        ({"LISTEN_PID": "42"}, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 0),
    ],
)
def test_listen_fds_counts_only_sockets_meant_for_this_pid(environ, expected):
    assert listen_fds(environ, pid=42) == expected


def test_metrics_sum_over_workers_and_survive_a_killed_worker(serve):
    """With workers, the master serves the sum of every worker's counters;
    a worker killed with its counts keeps them in the totals, and the
    restart is counted."""
    from apps.live import free_port
    from test_metrics import scrape, scrape_until

    port = free_port()
    served = serve("--workers=2", f"--metrics-listen=127.0.0.1:{port}")
    pids = served.wait_children(lambda p: len(p) == 2)
    for _ in range(10):
        with connect(("127.0.0.1", served.port)) as client:
            assert client.request().status == 200
    first = scrape_until(port, lambda s: s.value("maitre_requests_total", status="2xx") == 10)
    assert first.value("maitre_worker_restarts_total") == 0
    victim = next(iter(pids))
    os.kill(victim, signal.SIGKILL)
    served.wait_children(lambda p: len(p) == 2 and victim not in p)
    after = scrape_until(port, lambda s: s.value("maitre_worker_restarts_total") == 1)
    assert after.value("maitre_requests_total", status="2xx") == 10, "the dead worker's counts stay"
