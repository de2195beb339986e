"""The application of the worker-process tests (tests/python/test_workers.py).

* ``/`` answers the serving process's pid;
* ``/sleep?S`` announces on stderr that it is running (``sleeping in PID``),
  sleeps S seconds, then answers the pid;
* ``/env?NAME`` answers the environment variable NAME (or ``-``).
"""

import os
import sys
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ["QUERY_STRING"]
    if path == "/sleep":
        print(f"sleeping in {os.getpid()}", file=sys.stderr, flush=True)
        time.sleep(float(query))
        body = str(os.getpid())
    elif path == "/env":
        body = os.environ.get(query, "-")
    else:
        body = str(os.getpid())
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
