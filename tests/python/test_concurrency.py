"""Many clients at once: exact bodies, and the thread pool working."""

import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from apps.live import GUARD, build_request, live, wait_for  # noqa: F401
from apps.probe import app as probe_app

CLIENTS = 10
REQUESTS = 100


def body_for(client, request):
    """A body unique to (client, request), 0 to ~20 KB, every byte value."""
    seed = hashlib.sha256(f"{client}/{request}".encode()).digest()
    size = (client * 7919 + request * 104729) % 20000
    return (f"c{client}r{request}:".encode() + seed * (size // 32 + 1))[:size]


def run_client(server, client, errors, counts):
    """Keep-alive requests; every 10th on a new connection, every 25th a
    pipelined pair."""
    conn = None
    try:
        request = 0
        while request < REQUESTS:
            if conn is None or request % 10 == 0:
                if conn is not None:
                    conn.close()
                conn = server.connect()
            body = body_for(client, request)
            if request % 25 == 24 and request + 1 < REQUESTS:
                nxt = body_for(client, request + 1)
                conn.send(build_request("POST", f"/echo/{client}/{request}", [], body)
                          + build_request("POST", f"/echo/{client}/{request + 1}", [], nxt))
                pairs = [(request, body), (request + 1, nxt)]
                responses = [conn.read_response(), conn.read_response()]
            else:
                pairs = [(request, body)]
                responses = [conn.request("POST", f"/echo/{client}/{request}", [], body)]
            for (number, sent), response in zip(pairs, responses):
                assert response.status == 200
                assert response.header("X-Path") == f"/echo/{client}/{number}"
                assert response.body == sent, f"client {client} request {number}"
                counts[client] += 1
            request += len(pairs)
    except BaseException as exc:  # reported by the test
        errors.append((client, exc))
    finally:
        if conn is not None:
            conn.close()


def test_ten_clients_hundred_requests_each_exact_bodies(live):
    server = live(probe_app, threads=4)
    errors, counts = [], [0] * CLIENTS
    threads = [
        threading.Thread(target=run_client, args=(server, c, errors, counts))
        for c in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a client hung"
    assert errors == []
    assert counts == [REQUESTS] * CLIENTS


def test_four_threads_run_four_slow_requests_at_once(live):
    server = live(probe_app, threads=4)
    barrier = threading.Barrier(4)
    results = [None] * 4

    def client(i):
        with server.connect() as conn:
            barrier.wait(GUARD)
            results[i] = conn.request("GET", "/sleep?1")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    elapsed = time.monotonic() - started
    assert all(r is not None and r.status == 200 for r in results), results
    # Four different workers, at the same time: about 1 s, far from 4 s.
    assert len({r.body for r in results}) == 4
    assert elapsed < 1.8, f"4 x 1 s requests took {elapsed:.2f} s on 4 threads"


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_abrupt_clients_leave_no_descriptors_and_the_server_serves(live):
    """Hundreds of clients that reset the connection at once, some mid-head,
    some after a full request (CVE-2024-49769's pattern): the server keeps
    serving and every connection's descriptor is released."""
    server = live(probe_app, threads=2)
    with server.connect() as warm:
        assert warm.request().status == 200
    # The warm-up connection's descriptor may still be open here: the
    # baseline can only be higher than the server's idle count.
    baseline = open_fds()
    for i in range(300):
        sock = socket.create_connection(server.address, timeout=GUARD)
        if i % 3 == 1:
            sock.sendall(b"GET / HTTP/1.1\r\nHost")
        elif i % 3 == 2:
            sock.sendall(build_request("POST", "/echo", [], b"x" * 1000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert wait_for(lambda: open_fds() <= baseline), (
        f"{open_fds() - baseline} descriptors still open"
    )
    with server.connect() as client:
        assert client.request("POST", "/echo", [], b"still here").body == b"still here"
