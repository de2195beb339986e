"""The limit: what one call of the hello app costs in-process, with no server.

A server's CPU time per request can never drop below the cost of the WSGI
call itself (build an environ, call the app, iterate the result, close it).
This measures that floor with timeit: copy a prebuilt environ template,
call apps.hello with a minimal start_response, iterate, close. The report
puts it next to maitre's server CPU time per request in the hello keep-alive
run; the difference is what maitre spends per request on everything else
(HTTP parsing, the environ's per-request values, the handoff between the I/O
thread and the workers, syscalls).

    python bench/overhead.py [--calls N] [--app hello] [--json]
"""

import argparse
import io
import json
import sys
import timeit

import apps

TEMPLATE = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "REQUEST_URI": "/",
    "RAW_URI": "/",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_SOFTWARE": "maitre",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_HOST": "127.0.0.1",
    "REMOTE_PORT": "40000",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "HTTP_HOST": "127.0.0.1:8080",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
}


def _write(data):
    pass


def start_response(status, headers, exc_info=None):
    return _write


def make_call(app):
    template = TEMPLATE

    def call():
        environ = template.copy()
        result = app(environ, start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return call


def measure(app, calls, repeat=5):
    """Seconds per call: the best of ``repeat`` runs of ``calls`` calls (the
    least disturbed by other processes), and their median."""
    timer = timeit.Timer(make_call(app))
    runs = sorted(t / calls for t in timer.repeat(repeat=repeat, number=calls))
    return runs[0], runs[len(runs) // 2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1_000_000, help="calls per timing run (1e6)")
    p.add_argument("--repeat", type=int, default=5, help="timing runs; the best one counts (5)")
    p.add_argument("--app", default="hello", help="callable in apps.py (hello)")
    p.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = p.parse_args(argv)
    app = getattr(apps, args.app)
    best, median = measure(app, args.calls, args.repeat)
    print(
        f"in-process {args.app}: {best * 1e6:.3f} us per call (best of {args.repeat} x "
        f"{args.calls} calls; median {median * 1e6:.3f} us)"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "app": args.app,
                    "calls": args.calls,
                    "repeat": args.repeat,
                    "us_per_call": round(best * 1e6, 4),
                    "us_per_call_median": round(median * 1e6, 4),
                    "python": sys.version.split()[0],
                }
            )
        )


if __name__ == "__main__":
    main()
