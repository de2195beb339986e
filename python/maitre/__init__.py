"""maitre: a WSGI server with a Rust engine, a drop-in replacement for Waitress.

    from maitre import serve
    serve(app, listen="127.0.0.1:8080")
"""

import logging

from . import master
from .server import create_server

__all__ = ["create_server", "serve", "serve_paste", "__version__"]

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("maitre")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"


def serve(app, **kw):
    """Serve ``app`` until Ctrl-C, SIGTERM or ``close()``; then return None.

    Settings are keyword arguments (see ``maitre-serve --help``). Unless
    ``_quiet``, logging gets a basic configuration (if it has none) and each
    listening address is logged at INFO on the ``maitre`` logger.

    With ``workers`` above 1 or ``max_requests`` above 0 this process becomes
    a master that forks the workers (see ``maitre.master``; not on Windows);
    ``app`` may then be a ``master.AppLoader``, loaded in each worker.
    """
    _server = kw.pop("_server", create_server)  # test shim
    _quiet = kw.pop("_quiet", False)  # test shim
    _profile = kw.pop("_profile", False)  # test shim
    forked = master.wanted(kw)  # errors before anything binds
    if not _quiet:
        logging.basicConfig()  # does nothing if logging is configured
    server = _server(app, **kw)
    if not _quiet:
        server.print_listen("Serving on http://{}:{}")
    if forked:
        master.Master(server).run()
    elif _profile:
        _run_profiled(server)
    else:
        server.run()


def serve_paste(app, global_conf, **kw):
    """PasteDeploy's ``paste.server_runner`` (``use = egg:maitre#main``):
    values arrive as strings and are cast like any setting."""
    serve(app, **kw)
    return 0


def _run_profiled(server):
    """``server.run()`` under the ``profile`` module; the statistics (sorted by
    cumulative time) are printed when it returns."""
    import os
    import profile
    import pstats
    import tempfile

    fd, path = tempfile.mkstemp(prefix="maitre-profile-")
    os.close(fd)
    try:
        profile.runctx("server.run()", {}, {"server": server}, path)
        stats = pstats.Stats(path)
        stats.strip_dirs()
        stats.sort_stats("cumulative", "calls", "time")
        stats.print_stats(0.3)
    finally:
        os.remove(path)
