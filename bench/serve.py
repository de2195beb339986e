"""Start a server through its Python API: serve.py SERVER APP PORT [key=value...]

For the servers that have no command line of their own (bjoern, pyruvate) or
whose API is their documented entry point (maitre, waitress). APP names a
callable in apps.py. Extra key=value settings go to maitre and Waitress
(values stay strings: both cast them like their command lines do).
Access logging is off in all four by default.
"""

import logging
import sys

import apps

THREADS = 4


def main(argv):
    server, app_name, port = argv[1], argv[2], int(argv[3])
    extra = dict(arg.split("=", 1) for arg in argv[4:])
    app = getattr(apps, app_name)
    # maitre and Waitress log a "Task queue depth" warning whenever a request
    # has to wait for a thread, which under wrk -c50 with 4 threads is nearly
    # every request: a log line per request that no other server writes.
    for name in ("maitre.queue", "waitress.queue"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if server == "maitre":
        import maitre

        maitre.serve(app, listen=f"127.0.0.1:{port}", threads=THREADS, **extra)
    elif server == "waitress":
        import waitress

        waitress.serve(app, host="127.0.0.1", port=port, threads=THREADS, **extra)
    elif server == "bjoern":
        import bjoern

        bjoern.run(app, "127.0.0.1", port)
    elif server == "pyruvate":
        import pyruvate

        pyruvate.serve(app, f"127.0.0.1:{port}", THREADS)
    else:
        sys.exit(f"serve.py: unknown server {server!r}")


if __name__ == "__main__":
    main(sys.argv)
