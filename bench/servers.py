"""The servers under test: how to start each one on a port with 4 threads in
one process, how to tell that it is ready, and how to measure its process
tree (CPU seconds, RSS) from /proc.

Shared by bench.py (the wrk runs) and idle.py (the idle-connection test).
"""

import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerError(Exception):
    """The server did not start, or did not answer correctly."""


# --- what each server is and how it starts ---------------------------------


def _bin(name):
    """An executable next to the running python (the venv's bin) or on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(local):
        return local
    return shutil.which(name)


def _has_module(name):
    return importlib.util.find_spec(name) is not None


class Server:
    """One server: ``command(app, port, extra)`` is the argv that serves
    ``apps:<app>`` on 127.0.0.1:<port>."""

    def __init__(self, name, module, describe, command, binary=None, pip_name=None):
        self.name = name
        self.module = module  # importable name (if any), for the availability check
        self.binary = binary  # executable it needs, if any
        self.describe = describe  # how it runs, for the report
        self.command = command
        self.pip_name = pip_name or name

    def missing_reason(self):
        """None when the server can run here, else why not."""
        if self.module and not _has_module(self.module):
            return f"python module {self.module!r} not installed"
        if self.binary and not _bin(self.binary):
            return f"executable {self.binary!r} not found"
        return None

    def version(self):
        try:
            from importlib.metadata import version

            return version(self.pip_name)
        except Exception:
            return None


def _launcher(name):
    """Servers started through bench/serve.py (their Python API)."""

    def command(app, port, extra=None):
        argv = [sys.executable, os.path.join(HERE, "serve.py"), name, app, str(port)]
        for key, value in (extra or {}).items():
            argv.append(f"{key}={value}")
        return argv

    return command


def _gunicorn(app, port, extra=None):
    return [
        _bin("gunicorn"),
        "-k",
        "gthread",
        "--threads",
        str(THREADS),
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        f"apps:{app}",
    ]


def _granian(app, port, extra=None):
    return [
        _bin("granian"),
        "--interface",
        "wsgi",
        "--workers",
        "1",
        "--blocking-threads",
        str(THREADS),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        f"apps:{app}",
    ]


def _uwsgi(app, port, extra=None):
    # --http-socket answers one request per connection (it closes after each
    # response); the added "Connection: close" says so, or wrk would send its
    # next request into the closing socket and count a read error each time.
    # --http11-socket would keep connections open, but pins each one to a
    # thread (46 of wrk's 50 connections starve while 4 are served) and
    # cannot frame a response that has no Content-Length.
    return [
        _bin("uwsgi"),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--processes",
        "1",
        "--threads",
        str(THREADS),
        "--pythonpath",
        HERE,
        "--module",
        f"apps:{app}",
        "--need-app",
        "--disable-logging",
        "--die-on-term",
        "--buffer-size",
        "16384",
        "--listen",
        "1024",
        "--add-header",
        "Connection: close",
    ]


SERVERS = {
    s.name: s
    for s in [
        Server("maitre", "maitre", "maitre.serve(threads=4)", _launcher("maitre")),
        Server("waitress", "waitress", "waitress.serve(threads=4)", _launcher("waitress")),
        Server(
            "gunicorn",
            "gunicorn",
            "gunicorn -k gthread --threads 4 -w 1",
            _gunicorn,
            binary="gunicorn",
        ),
        Server(
            "granian",
            "granian",
            "granian --interface wsgi --workers 1 --blocking-threads 4",
            _granian,
            binary="granian",
        ),
        Server("bjoern", "bjoern", "bjoern.run (one thread, its model)", _launcher("bjoern")),
        Server(
            "uwsgi",
            None,
            "uwsgi --http-socket --processes 1 --threads 4",
            _uwsgi,
            binary="uwsgi",
            pip_name="uWSGI",
        ),
        Server("pyruvate", "pyruvate", "pyruvate.serve(num_workers=4)", _launcher("pyruvate")),
    ]
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc: the server's process tree --------------------------------------


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


def process_tree(root):
    """root and all its descendants (pids), by scanning /proc for ppids."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root):
    """utime+stime of every live process in the tree, plus the times of the
    children each one has reaped (cutime+cstime)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # after "(comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += sum(int(f[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


def _status_kib(pid, keys):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def tree_rss_kib(root):
    """Current RSS summed over the process tree."""
    return sum(_status_kib(pid, ("VmRSS",)).get("VmRSS", 0) for pid in process_tree(root))


class MemorySampler(threading.Thread):
    """Samples the tree every 100 ms: the largest summed VmRSS seen, and each
    process's VmHWM (kept after the process is gone)."""

    def __init__(self, root, interval=0.1):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.max_rss_kib = 0
        self.hwm_kib = {}
        self._stop_event = threading.Event()

    def sample(self):
        total = 0
        for pid in process_tree(self.root):
            st = _status_kib(pid, ("VmRSS", "VmHWM"))
            total += st.get("VmRSS", 0)
            if "VmHWM" in st:
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), st["VmHWM"])
        self.max_rss_kib = max(self.max_rss_kib, total)

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self):
        self._stop_event.set()
        self.join()
        self.sample()

    @property
    def peak_kib(self):
        """Sum of each process's VmHWM (its lifetime peak)."""
        return sum(self.hwm_kib.values())


# --- one running server ----------------------------------------------------


def _raise_nofile(limit):
    def preexec():
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max(soft, limit)
        if hard != resource.RLIM_INFINITY and hard < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                return
            except (ValueError, OSError):
                want = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    return preexec


class Running:
    """A server process started on a free port, in its own process group.

    Use as a context manager: it stops the whole group on exit.
    """

    def __init__(self, server, app, log_path, extra=None, nofile=None, port=None):
        self.server = server
        self.app = app
        self.port = port or free_port()
        self.log_path = log_path
        argv = server.command(app, self.port, extra)
        env = dict(os.environ)
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_nofile(nofile) if nofile else None,
        )
        self.pid = self.proc.pid
        self.memory = MemorySampler(self.pid)
        self.memory.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, check, timeout=30.0):
        """Until a TCP connect succeeds, then one request must pass ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ServerError(
                    f"{self.server.name} exited with status {self.proc.returncode} "
                    f"before accepting connections:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"{self.server.name} not listening on port {self.port} "
                        f"after {timeout:.0f} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
        check(self.port)

    def stop(self):
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Workers a server forked may outlive its main process.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.memory.is_alive():
            self.memory._stop_event.set()
            self.memory.join()
        self.log.close()


# --- the readiness request ---------------------------------------------------


def request(port, method="GET", path="/", body=None, headers=None, timeout=10):
    """One HTTP/1.1 request on a new connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data
    finally:
        conn.close()
