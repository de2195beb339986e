"""Exceptions an application may see."""


class ClientDisconnected(Exception):
    """The client went away: raised by the WSGI ``write()`` callable (and so
    by anything writing a response) once the connection is gone."""
