"""Graceful stop with real processes: SIGTERM/SIGINT let requests in flight
finish (the issue's acceptance: 50 clients in the middle of a 2 s request
all get complete 200s, and the process exits well within graceful_timeout),
a second signal stops at once, and nothing new is accepted meanwhile."""

import signal
import socket
import time

import pytest

from apps.live import GUARD, Process, connect, wait_for

CLIENTS = 50


def serve(processes, *args):
    proc = Process.maitre_serve("--listen=127.0.0.1:0", *args, "apps.slow:app")
    processes.append(proc)
    _, port = proc.wait_serving()
    return proc, port


def asleep(port):
    with connect(("127.0.0.1", port)) as client:
        return int(client.request(path="/count").body)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_every_request_in_flight_finish(processes, sig):
    # One more thread than clients, for the /count probes.
    proc, port = serve(processes, f"--threads={CLIENTS + 1}", "--graceful-timeout=30")
    streams = [connect(("127.0.0.1", port)) for _ in range(CLIENTS // 2)]
    plains = [connect(("127.0.0.1", port)) for _ in range(CLIENTS - len(streams))]
    idle = connect(("127.0.0.1", port))
    try:
        assert idle.request(path="/count").status == 200  # now idle keep-alive
        for client in streams:
            client.send(b"GET /stream?s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        for client in plains:
            client.send(b"GET /plain?s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        for client in streams:
            client.read_until(b"started\n")
        assert wait_for(lambda: asleep(port) == CLIENTS), "not every request is running"

        signalled = time.monotonic()
        proc.proc.send_signal(sig)
        assert idle.closed_by_server(), "an idle keep-alive connection is closed at once"
        assert wait_for(lambda: refused(port)), "still accepting after the signal"
        for client in plains:
            response = client.read_response()
            assert (response.status, response.body) == (200, b"slept 2.0\n")
            assert response.header("Connection") == "close"
            assert client.closed_by_server()
        for client in streams:
            rest = client.read_to_eof()
            # The head went out before the signal (keep-alive, chunked); the
            # body still ends properly: the last chunk, then the close.
            assert rest.endswith(b"5\r\ndone\n\r\n0\r\n\r\n"), rest
        assert proc.proc.wait(GUARD) == 0
        elapsed = time.monotonic() - signalled
        assert elapsed < 10, f"exited {elapsed:.1f} s after the signal"
    finally:
        for client in streams + plains + [idle]:
            client.close()
    log = "\n".join(proc.rest())
    assert "stopping gracefully" in log
    assert "graceful_timeout reached" not in log


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_second_signal_stops_at_once(processes):
    proc, port = serve(processes, "--graceful-timeout=30")
    client = connect(("127.0.0.1", port))
    try:
        client.send(b"GET /stream?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        client.read_until(b"started\n")
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_line("stopping gracefully")
        time.sleep(0.2)  # a human's second Ctrl-C; the process is draining meanwhile
        assert proc.proc.poll() is None, "the first signal must not stop a busy server"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(GUARD) == 0
        assert time.monotonic() - started < 3
        # The rest of the "started" chunk, then the close: no last chunk.
        assert client.read_to_eof() == b"\r\n", "the response was cut"
    finally:
        client.close()


def test_graceful_timeout_bounds_the_wait(processes):
    proc, port = serve(processes, "--graceful-timeout=1")
    client = connect(("127.0.0.1", port))
    try:
        client.send(b"GET /plain?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_for(lambda: asleep(port) == 1)
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(GUARD) == 0
        assert 0.9 < time.monotonic() - started < 5
        assert client.read_to_eof() == b"", "nothing was ever sent for the cut request"
    finally:
        client.close()
