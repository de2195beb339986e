"""Exceptions an application may see."""


class ClientDisconnected(Exception):
    """The client went away: raised by the WSGI ``write()`` callable (and so
    by anything writing a response) once the connection is gone."""


class RequestTimeout(TimeoutError):
    """Raised inside an application thread whose request ran longer than
    ``request_timeout``; the client has already been answered (503) or cut.
    Python delivers it at the thread's next bytecode, so code blocked in C
    (a long ``time.sleep``, a socket read) sees it when that call returns."""
