"""An application that outlives the server's shutdown grace.

``/`` sends ``started`` (so a client knows the app runs), then blocks until
the process exits: ``app_wakes_at_exit`` is released by an atexit hook (the
worker wakes while the interpreter finalizes), ``app_stays_stuck`` never is.
"""

import atexit
import threading

_released_at_exit = threading.Event()
atexit.register(_released_at_exit.set)

_never = threading.Event()


def _blocking(event):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started\n")
        event.wait(60)
        return [b"finished\n"]

    return app


app_wakes_at_exit = _blocking(_released_at_exit)
app_stays_stuck = _blocking(_never)
