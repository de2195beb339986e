"""maitre-serve and python -m maitre as real processes: the startup line,
serving, stopping on SIGINT/SIGTERM, and the README's demo."""

import json
import signal
import subprocess
import sys
import time

import pytest

from apps.live import TESTS_DIR, Process, free_port
from apps.live import connect as connect_to


def connect(port):
    return connect_to(("127.0.0.1", port))


def start(processes, *args, module=False):
    if module:
        proc = Process([sys.executable, "-m", "maitre", *args])
    else:
        proc = Process.maitre_serve(*args)
    processes.append(proc)
    return proc


def test_serving_line_on_stderr_and_answers(processes):
    port = free_port()
    proc = start(processes, f"--listen=127.0.0.1:{port}", "apps.probe:app")
    line = proc.wait_line(r"Serving on")
    assert line.string == f"INFO:maitre:Serving on http://127.0.0.1:{port}"
    with connect(port) as client:
        environ = json.loads(client.request("GET", "/x?y").body)
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/x", "y")
    assert environ["SERVER_PORT"] == str(port)
    assert proc.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("module", [False, True], ids=["maitre-serve", "python-m"])
def test_signal_stops_with_status_zero(processes, sig, module):
    proc = start(processes, "--listen=127.0.0.1:0", "apps.probe:app", module=module)
    host, port = proc.wait_serving()
    with connect(port) as client:
        assert client.request("GET", "/").status == 200
        # An idle keep-alive connection must not hold the shutdown up.
        started = time.monotonic()
        assert proc.stop(sig) == 0
        assert time.monotonic() - started < 5
    assert not any("Traceback" in line for line in proc.rest())


def test_signal_during_a_request(processes):
    """SIGTERM while the app is busy: the process still exits 0 promptly
    (threads get the 5 s grace, the request is not waited for forever)."""
    proc = start(processes, "--listen=127.0.0.1:0", "--threads=1", "apps.probe:app")
    _, port = proc.wait_serving()
    with connect(port) as client:
        client.send(b"GET /stream?1 HTTP/1.1\r\nHost: x\r\n\r\n")
        client.read_until(b"start\n")  # the app is running
        started = time.monotonic()
        assert proc.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 7


def test_readme_demo_answers_root_and_echo(processes):
    proc = start(processes, "--listen=127.0.0.1:0", "maitre.demo:app")
    _, port = proc.wait_serving()
    with connect(port) as client:
        hello = client.request("GET", "/")
        assert hello.status == 200
        assert hello.body.startswith(b"Hello from maitre!\n")
        assert f"SERVER_PORT: {port}\n".encode() in hello.body
        echo = client.request("POST", "/echo", [("Content-Type", "text/x-demo")], b"ping!")
        assert (echo.status, echo.body, echo.header("Content-Type")) == (200, b"ping!", "text/x-demo")
        assert client.request("GET", "/echo").status == 405
        assert client.request("GET", "/nowhere").status == 404
    assert proc.stop(signal.SIGINT) == 0


def test_python_m_maitre_serves(processes):
    proc = start(processes, "--listen=127.0.0.1:0", "maitre.demo:app", module=True)
    _, port = proc.wait_serving()
    with connect(port) as client:
        assert client.request("GET", "/").body.startswith(b"Hello from maitre!")
    assert proc.stop(signal.SIGTERM) == 0


def test_app_option_and_call(processes):
    proc = start(processes, "--listen=127.0.0.1:0", "--call", "--app=apps.probe:make_app")
    _, port = proc.wait_serving()
    with connect(port) as client:
        assert client.request("POST", "/echo", [], b"called").body == b"called"
    assert proc.stop(signal.SIGINT) == 0


def test_missing_app_module(processes):
    done = subprocess.run(
        [sys.executable, "-m", "maitre", "no_such_module_xyz:app"],
        cwd=TESTS_DIR, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: No module named 'no_such_module_xyz'\n")
    assert "There was an exception (ModuleNotFoundError) importing your module." in done.stderr


# -- shutdown with an application that outlives the 5 s grace ------------------------


def test_stop_with_a_stuck_app_exits_zero_after_graceful_timeout(processes):
    proc = start(
        processes, "--listen=127.0.0.1:0", "--graceful-timeout=2", "apps.hung:app_stays_stuck"
    )
    _, port = proc.wait_serving()
    with connect(port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client.read_until(b"started\n")
        started = time.monotonic()
        assert proc.stop(signal.SIGINT) == 0
        elapsed = time.monotonic() - started
    assert 1.8 < elapsed < 6, elapsed  # graceful_timeout, then no further wait
    rest = proc.rest()
    assert "WARNING:maitre:graceful_timeout reached: closing 1 connections still in progress" in rest
    assert "WARNING:maitre:1 thread(s) still running" in rest


def test_stop_with_an_app_finishing_during_interpreter_exit_exits_zero(processes):
    proc = start(
        processes, "--listen=127.0.0.1:0", "--graceful-timeout=1", "apps.hung:app_wakes_at_exit"
    )
    _, port = proc.wait_serving()
    with connect(port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client.read_until(b"started\n")
        assert proc.stop(signal.SIGTERM) == 0
