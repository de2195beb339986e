"""Probe applications and the live-server harness for the real-socket tests.

``live`` holds the harness (servers in threads, a raw HTTP/1.x client);
the other modules are WSGI applications, importable by ``maitre-serve`` and
PasteDeploy when the current directory is ``tests/python``.
"""
