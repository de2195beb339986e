"""Worker processes: a master that forks and supervises them (Unix only).

With ``workers`` above 1, or ``max_requests`` above 0 (a recycled worker
needs someone to start its replacement), ``serve()`` and ``maitre-serve``
run a master:

* The master binds the listening sockets (``create_server``) and keeps them
  open for its whole life, so the kernel queues connections while workers
  come and go: no connection is refused during a restart.
* Each worker is a fork of the master that runs the native server over its
  inherited copies of those sockets. The master starts no thread and never
  serves a request; it waits in ``poll`` on a self-pipe (signals) and one
  status pipe per worker.
* Master -> worker: a control pipe that the master never writes. Closing its
  end asks the worker to drain; the master dying closes it too, so no
  orphan worker keeps serving. A pipe rather than a signal: a SIGTERM that a
  service manager sends to every process of the service, or the SIGINT of
  Ctrl-C in a terminal, already reaches the workers, and a second signal
  from the master would turn their graceful drain into an abrupt stop.
* Worker -> master, on the status pipe: ``B`` once the application is
  loaded (the worker has booted) and ``R`` when the native server starts
  retiring after ``max_requests`` (the replacement is forked at once).

Master signals: TERM/INT drain every worker (up to ``graceful_timeout``, then
SIGKILL) and return; a second TERM/INT kills them at once; HUP forks a new set
of workers and drains the old ones once the new ones have booted; TTIN and
TTOU add and remove one worker (never fewer than one).
"""

import collections
import logging
import os
import select
import signal
import socket
import sys
import threading
import time

from . import _maitre, metrics

__all__ = [
    "AppLoader",
    "BOOT_ERROR",
    "CAN_FORK",
    "Master",
    "WorkerBootError",
    "wanted",
    "worker_hooks",
]

logger = logging.getLogger("maitre.master")

#: Whether this platform can fork workers (not Windows).
CAN_FORK = hasattr(os, "fork") and not sys.platform.startswith("win")

#: A worker's exit status when it could not load the application.
BOOT_ERROR = 3

#: Seconds past ``graceful_timeout`` the master waits for a draining worker
#: before SIGKILL: the native server then still gives running apps up to 5 s.
KILL_MARGIN = 6.0

#: Seconds the master waits for a SIGKILLed worker to be reaped before it
#: forgets it (a process stuck in the kernel must not hold the master).
REAP_GRACE = 5.0

#: Seconds before retrying a fork that failed (EAGAIN, ENOMEM).
FORK_RETRY = 1.0

NO_FORK = (
    "workers above 1 and max_requests need worker processes, which need "
    "os.fork(): not available on this platform (run one process per port, "
    "or use workers=1 and max_requests=0)"
)
NOT_MAIN_THREAD = (
    "workers above 1 and max_requests need a master process, which handles "
    "signals: call serve() from the main thread"
)

_STOP_SIGNALS = ("SIGTERM", "SIGINT")
_MASTER_SIGNALS = _STOP_SIGNALS + ("SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")
# In a worker: a HUP/TTIN/TTOU sent to the whole process group is the
# master's business, not a reason for the worker to die or stop.
_WORKER_IGNORED = ("SIGHUP", "SIGTTIN", "SIGTTOU")

# In a forked worker: the write end of its status pipe (the native server's
# ``retire_fd`` hook).
_retire_fd = None

#: The Master running in this process, if any (its ``counters`` are for
#: metrics).
running = None


class WorkerBootError(RuntimeError):
    """A worker could not load the application; the master stopped."""


class AppLoader:
    """An application that is named, not imported: each worker calls
    ``load()`` after fork, so the master never imports it and a reload (HUP)
    picks up new code. ``load()`` may print why it failed and raise
    SystemExit; any other exception is logged with its traceback."""

    def __init__(self, load, name=None):
        self._load = load
        self.name = name

    def load(self):
        return self._load()

    def __call__(self, environ, start_response):
        raise RuntimeError("an AppLoader is loaded in each worker, never served")

    def __repr__(self):
        return f"<AppLoader {self.name!r}>"


def wanted(kw):
    """Whether the settings ``kw`` need a master process. Raises ValueError,
    before anything binds, when they do and it cannot run here."""
    pairs = [(name, kw[name]) for name in ("workers", "max_requests") if name in kw]
    if not pairs:
        return False
    values, _ = _maitre.parse_settings(pairs)
    if values["workers"] <= 1 and values["max_requests"] <= 0:
        return False
    if not CAN_FORK:
        raise ValueError(NO_FORK)
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(NOT_MAIN_THREAD)
    return True


def worker_hooks():
    """Extra hooks for the native server: in a forked worker, the pipe where
    it announces its retirement."""
    return {} if _retire_fd is None else {"retire_fd": _retire_fd}


def describe_status(status):
    """A waitpid status in words: "exit status 1", "killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"status {status}"


class _Worker:
    """The master's record of one worker process."""

    def __init__(self, pid, status_fd, control_fd, generation):
        self.pid = pid
        self.status_fd = status_fd  # read end; None once at EOF
        self.control_fd = control_fd  # write end; closed to ask for a drain
        self.generation = generation
        self.born = time.monotonic()
        self.ready = False  # sent "B": the application is loaded
        self.retiring = False  # sent "R": max_requests reached
        self.stopping = False  # the master asked it to drain
        self.kill_at = None  # when a draining worker gets SIGKILL
        self.killed = False
        self.slot = None  # its metrics slot (metrics_listen)

    @property
    def draining(self):
        return self.retiring or self.stopping


class Master:
    """Forks and supervises ``adj.workers`` workers serving ``server``'s
    listeners; ``run()`` returns once every worker is gone (after TERM/INT)
    and raises WorkerBootError when workers could not load the application."""

    def __init__(self, server):
        self.server = server
        adj = server.adj
        self.target = adj.workers
        self.graceful_timeout = float(adj.graceful_timeout)
        self.workers = []
        self.generation = 0
        self.stopping = False
        self.failure = None
        self.fork_retry_at = None
        #: Counters for metrics: replacements after max_requests, unexpected
        #: deaths, reloads.
        self.counters = {"retired": 0, "died": 0, "reloads": 0}
        self._signals = collections.deque()
        # metrics_listen: the workers count into shared memory; the master
        # serves the sums from its own loop (it starts no thread).
        self._metrics = None
        if adj.metrics_listen:
            self._metrics = _MasterMetrics(adj.metrics_listen)
        self._wakeup = None
        self._old_handlers = {}
        self._old_wakeup = -1

    # -- the loop ---------------------------------------------------------

    def run(self):
        global running
        self._install_signals()
        running = self
        try:
            logger.info(
                "Master process with pid %d starting %d worker(s)", os.getpid(), self.target
            )
            self._loop()
        finally:
            for worker in self.workers:  # only after a failure of the loop
                self._ask_to_drain(worker)
            self._restore_signals()
            self.server.close()  # the master's copies of the listeners
            if self._metrics is not None:
                self._metrics.close()
            running = None
        if self.failure is not None:
            raise WorkerBootError(self.failure)
        logger.info("Master process with pid %d stopped", os.getpid())

    def _loop(self):
        while True:
            self._handle_signals()
            self._reap()
            self._kill_overdue()
            if self.stopping:
                if not self.workers:
                    return
            else:
                self._manage()
            self._wait(self._timeout())

    def _wait(self, timeout):
        poller = select.poll()
        poller.register(self._wakeup[0], select.POLLIN)
        if self._metrics is not None:
            poller.register(self._metrics.sock.fileno(), select.POLLIN)
        for worker in self.workers:
            if worker.status_fd is not None:
                poller.register(worker.status_fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000) + 1)
        ready = {fd for fd, _ in poller.poll(ms)}
        if self._wakeup[0] in ready:
            _drain_fd(self._wakeup[0])
        if self._metrics is not None and self._metrics.sock.fileno() in ready:
            self._metrics.answer()
        for worker in self.workers:
            if worker.status_fd in ready:
                self._read_status(worker)

    def _timeout(self):
        times = [w.kill_at for w in self.workers if w.kill_at is not None]
        if self.fork_retry_at is not None and not self.stopping:
            times.append(self.fork_retry_at)
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    # -- signals ----------------------------------------------------------

    def _install_signals(self):
        reader, writer = os.pipe()
        for fd in (reader, writer):
            os.set_blocking(fd, False)
        self._wakeup = (reader, writer)
        self._old_wakeup = signal.set_wakeup_fd(writer)
        for name in _MASTER_SIGNALS:
            number = getattr(signal, name)
            self._old_handlers[number] = signal.signal(number, self._on_signal)

    def _restore_signals(self):
        for number, handler in self._old_handlers.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        signal.set_wakeup_fd(self._old_wakeup)
        for fd in self._wakeup:
            os.close(fd)

    def _on_signal(self, signum, frame):
        # No work in a handler: the loop reads the queue.
        self._signals.append(signum)

    def _handle_signals(self):
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            if name in _STOP_SIGNALS:
                if self.stopping:
                    self._stop_now(name)
                else:
                    logger.info(
                        "%s: draining the workers (up to %g s)", name, self.graceful_timeout
                    )
                    self._begin_stop()
            elif self.stopping:
                continue
            elif name == "SIGHUP":
                self._reload()
            elif name == "SIGTTIN":
                self.target += 1
                logger.info("SIGTTIN: %d worker(s) wanted", self.target)
            elif name == "SIGTTOU":
                self.target = max(1, self.target - 1)
                logger.info("SIGTTOU: %d worker(s) wanted", self.target)

    # -- worker bookkeeping -------------------------------------------------

    def _active(self):
        """Workers of the current generation that are not on their way out."""
        return [w for w in self.workers if w.generation == self.generation and not w.draining]

    def _manage(self):
        active = self._active()
        missing = self.target - len(active)
        if missing > 0 and (self.fork_retry_at is None or time.monotonic() >= self.fork_retry_at):
            self.fork_retry_at = None
            for _ in range(missing):
                if not self._spawn():
                    break
        for worker in sorted(active, key=lambda w: w.born)[: max(0, -missing)]:
            self._ask_to_drain(worker)
        self._finish_reload()

    def _finish_reload(self):
        """Once the new generation has booted, drain the old one."""
        old = [w for w in self.workers if w.generation != self.generation and not w.draining]
        active = self._active()
        if old and len(active) >= self.target and all(w.ready for w in active):
            logger.info("Reload: new workers ready; stopping %d old worker(s)", len(old))
            for worker in old:
                self._ask_to_drain(worker)

    def _reload(self):
        self.generation += 1
        self.counters["reloads"] += 1
        logger.info("SIGHUP: starting %d new worker(s), then stopping the old ones", self.target)

    def _begin_stop(self):
        self.stopping = True
        for worker in self.workers:
            self._ask_to_drain(worker)

    def _stop_now(self, name):
        logger.info("%s again: killing %d worker(s) now", name, len(self.workers))
        for worker in self.workers:
            self._kill(worker)

    def _ask_to_drain(self, worker):
        if worker.control_fd is not None:
            os.close(worker.control_fd)
            worker.control_fd = None
        worker.stopping = True
        if worker.kill_at is None:
            worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_MARGIN

    def _kill(self, worker):
        if worker.killed:
            return
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.killed = True
        worker.stopping = True
        worker.kill_at = time.monotonic() + REAP_GRACE

    def _kill_overdue(self):
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.kill_at is None or worker.kill_at > now:
                continue
            if worker.killed:
                logger.error(
                    "Worker with pid %d was not reaped after SIGKILL; forgetting it", worker.pid
                )
                self._forget(worker)
            else:
                logger.warning(
                    "Worker with pid %d still running %g s after it was asked to stop; killing it",
                    worker.pid,
                    self.graceful_timeout + KILL_MARGIN,
                )
                self._kill(worker)

    def _read_status(self, worker):
        """Read what the worker said (non-blocking); EOF closes the pipe."""
        while worker.status_fd is not None:
            try:
                data = os.read(worker.status_fd, 512)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                os.close(worker.status_fd)
                worker.status_fd = None
                return
            if b"B" in data:
                worker.ready = True
            if b"R" in data and not worker.retiring:
                worker.retiring = True
                logger.info(
                    "Worker with pid %d reached max_requests and is retiring; "
                    "starting its replacement",
                    worker.pid,
                )
                if worker.kill_at is None:
                    worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_MARGIN

    def _reap(self):
        for worker in list(self.workers):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, None  # reaped by someone else
            if pid == 0:
                continue
            self._read_status(worker)  # a last "R" may still be in the pipe
            self._forget(worker)
            self._account(worker, status)

    def _forget(self, worker):
        self.workers.remove(worker)
        if self._metrics is not None and worker.slot is not None:
            self._metrics.release(worker.slot)
            worker.slot = None
        for fd in (worker.status_fd, worker.control_fd):
            if fd is not None:
                os.close(fd)
        worker.status_fd = worker.control_fd = None

    def _account(self, worker, status):
        """Log a worker's end and decide what it means."""
        how = "status unknown" if status is None else describe_status(status)
        clean = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        replaced = not (worker.stopping or self.stopping)
        if self._metrics is not None and replaced:
            self._metrics.block.count_restart()
        if worker.retiring and clean:
            self.counters["retired"] += 1
            logger.info("Worker with pid %d retired after max_requests", worker.pid)
        elif worker.stopping:
            log = logger.info if clean or worker.killed else logger.warning
            log("Worker with pid %d stopped (%s)", worker.pid, how)
        elif not worker.ready and not clean:
            self._boot_failed(worker, how)
        else:
            self.counters["died"] += 1
            log = logger.info if clean else logger.warning
            log("Worker with pid %d exited unexpectedly (%s); starting a new one", worker.pid, how)

    def _boot_failed(self, worker, how):
        old = [w for w in self.workers if w.generation != worker.generation and not w.draining]
        if worker.generation == self.generation and old and not self.stopping:
            logger.error(
                "Worker with pid %d failed to boot (%s); reload abandoned, "
                "the %d old worker(s) keep serving",
                worker.pid,
                how,
                len(old),
            )
            for new in self._active():
                self._ask_to_drain(new)
            self.generation += 1
            for survivor in old:
                survivor.generation = self.generation
            return
        message = f"Worker with pid {worker.pid} failed to boot ({how}); stopping"
        logger.error(message)
        if self.failure is None:
            self.failure = message
        if not self.stopping:
            self._begin_stop()

    # -- forking ------------------------------------------------------------

    def _spawn(self):
        """Fork one worker of the current generation; False if fork failed."""
        slot = self._metrics.take() if self._metrics is not None else None
        status_r, status_w = os.pipe()
        control_r, control_w = os.pipe()
        os.set_blocking(status_r, False)
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (status_r, status_w, control_r, control_w):
                os.close(fd)
            if slot is not None:
                self._metrics.free.append(slot)
            logger.error("Cannot fork a worker (%s); retrying in %g s", exc, FORK_RETRY)
            self.fork_retry_at = time.monotonic() + FORK_RETRY
            return False
        if pid == 0:
            os.close(status_r)
            os.close(control_w)
            if self._metrics is not None:
                self._metrics.sock.close()
                metrics.assign(self._metrics.block, slot)
            self._become_worker(status_w, control_r)  # never returns
        os.close(status_w)
        os.close(control_r)
        worker = _Worker(pid, status_r, control_w, self.generation)
        worker.slot = slot
        self.workers.append(worker)
        logger.info("Booting worker with pid %d", pid)
        return True

    def _become_worker(self, status_fd, control_fd):
        """In the child: shed the master's state, serve, and exit; never
        returns into the master's code."""
        global running
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for number in self._old_handlers:
                signal.signal(number, signal.SIG_DFL)
            for name in _WORKER_IGNORED:
                signal.signal(getattr(signal, name), signal.SIG_IGN)
            for fd in self._wakeup:
                os.close(fd)
            for worker in self.workers:
                for fd in (worker.status_fd, worker.control_fd):
                    if fd is not None:
                        os.close(fd)
            self.workers = []
            running = None
            status = _WorkerProcess(self.server, status_fd, control_fd).run()
        except BaseException:
            logger.exception("Worker with pid %d failed", os.getpid())
        finally:
            exit_now(status)


class _MasterMetrics:
    """The master's side of ``metrics_listen``: the shared block with one slot
    per live worker, and a listening socket answered from the master's loop
    (one short request at a time: scrapes are rare and tiny)."""

    SLOTS = 256  # more live workers than this share nothing more (TTIN)

    def __init__(self, listen):
        self.block = metrics.MetricsBlock(self.SLOTS)
        self.free = list(range(self.SLOTS - 1, -1, -1))
        family, host, port = metrics.parse_listen(listen)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(16)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def take(self):
        return self.free.pop() if self.free else None

    def release(self, slot):
        self.block.retire(slot)
        self.free.append(slot)

    def answer(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(1.0)
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 8192:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    conn.sendall(_metrics_response(request, self.block))
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def _metrics_response(request, block):
    target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
    path = target.split(b"?", 1)[0]
    if not request.startswith(b"GET ") or path not in (b"/metrics", b"/"):
        return b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    body = block.render().encode()
    head = (
        f"HTTP/1.0 200 OK\r\nContent-Type: {metrics.CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _WorkerProcess:
    """A forked worker: loads the application, tells the master it has
    booted, serves until drained (by a signal, by the master, by its own
    ``max_requests``) and returns its exit status."""

    def __init__(self, server, status_fd, control_fd):
        global _retire_fd
        self.server = server
        self.status_fd = status_fd
        self.control_fd = control_fd
        _retire_fd = status_fd
        # Reentrant: the signal handler runs in the main thread, which may be
        # holding it.
        self.lock = threading.RLock()
        self.draining = False
        self.serving = False
        self.stop_signals = 0

    def run(self):
        for name in _STOP_SIGNALS:
            signal.signal(getattr(signal, name), self._on_stop_signal)
        watcher = threading.Thread(
            target=self._watch_master, name="maitre-master-watch", daemon=True
        )
        watcher.start()
        app = self.server.application
        if isinstance(app, AppLoader):
            try:
                app = app.load()
            except BaseException as exc:
                if self.draining:
                    return 0  # stopped while booting
                if not isinstance(exc, SystemExit):  # the loader has not said why
                    logger.exception("Worker with pid %d cannot load the application", os.getpid())
                return BOOT_ERROR
            self.server.application = app
        with self.lock:
            if self.draining:
                return 0
            self.serving = True
        os.write(self.status_fd, b"B")
        try:
            self.server.run()
        except (KeyboardInterrupt, SystemExit):
            pass  # a stop signal just before run() took over its handling
        return 0

    def _on_stop_signal(self, signum, frame):
        """TERM/INT: the first starts the drain, a second stops at once, as
        in a single process; a drain the master asked for is not a signal,
        so the group-wide signal that follows it (or came before it) still
        counts as the first."""
        self.stop_signals += 1
        with self.lock:
            first = not self.draining
            self.draining = True
        if first or self.stop_signals >= 2:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

    def _watch_master(self):
        """EOF on the control pipe: the master asks for a drain, or died."""
        while True:
            try:
                if not os.read(self.control_fd, 64):
                    break
            except OSError:
                break
        with self.lock:
            if self.draining:
                return
            self.draining = True
            serving = self.serving
        if serving:
            self.server.close()
        else:
            exit_now(0)  # still loading the application: nothing to drain


def _drain_fd(fd):
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except (BlockingIOError, InterruptedError):
            return


def exit_now(status):
    """End the process without returning into the caller's code, its atexit
    hooks or interpreter finalization. A worker thread still inside an app
    (past the shutdown grace) would otherwise return into a finalizing
    interpreter, which ends native threads in a way that aborts the process.
    Waitress's daemon threads simply die with the process; this is the same
    outcome, minus atexit hooks. Used by forked workers and by maitre-serve."""
    try:
        logging.shutdown()
    except Exception:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)
