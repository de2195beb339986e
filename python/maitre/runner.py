"""``maitre-serve``: serve a WSGI application named on the command line.

Behaves like Waitress 3.0.2's ``waitress-serve`` (same options, same errors,
same exit codes), plus ``--app=MODULE:OBJECT`` from Waitress's main branch.
"""

import getopt
import logging
import os
import pkgutil
import sys
import textwrap

from . import _maitre, serve
from . import master as _master
from . import server as _server
from .adjustments import Adjustments

logger = logging.getLogger("maitre")

# Placeholder shown for the value of each kind of setting.
_METAVARS = {
    "str": "STR",
    "int": "INT",
    "seconds": "SECONDS",
    "list": "HOST:PORT",
    "octal": "MODE",
    "striftruthy": "STR",
    "slashfixedstr": "PATH",
    "set": "NAMES",
}
_NAMED_METAVARS = {"host": "ADDR", "port": "PORT", "unix_socket": "PATH"}

_USAGE = """\
Usage:

    {name} [OPTS] MODULE:OBJECT
    {name} [OPTS] --app=MODULE:OBJECT

Serve the WSGI application OBJECT found in the Python module MODULE (the
current directory is searched first). OBJECT may be a dotted path
(module:object.attribute). Options must come before MODULE:OBJECT.

Standard options:

    --help
        Show this text and exit.

    --app=MODULE:OBJECT
        The application to serve, instead of the positional argument.

    --call
        OBJECT is a factory: call it (with no arguments) to get the
        application.

Settings (any unique prefix of an option works; booleans take no value):
"""

_NOTES = {
    "listen": "May be given several times: the addresses add up.",
    "workers": (
        "The master also takes SIGHUP (start new workers, then stop the old "
        "ones: a reload), SIGTTIN and SIGTTOU (one worker more or fewer)."
    ),
    "max_requests": "Above 0 a master process runs even for one worker, to start its replacement.",
}

_TAIL = """\
Values are checked when the server starts. Sockets passed by a service
manager (systemd socket activation: LISTEN_PID and LISTEN_FDS) replace
--listen, --host, --port and --unix-socket.
"""


def _option_help(name, kind, default, text):
    option = "--" + name.replace("_", "-")
    if kind == "bool":
        head = f"{option}, --no-{name.replace('_', '-')}"
    else:
        head = f"{option}={_NAMED_METAVARS.get(name, _METAVARS.get(kind, 'VALUE'))}"
    if name in _NOTES:
        text = f"{text}. {_NOTES[name]}"
    lines = [text] + ([f"Default: {default}"] if default else [])
    body = "\n".join(_indent_fill(line) for line in lines)
    return f"    {head}\n{body}\n"


def _indent_fill(text):
    return textwrap.fill(text, width=76, initial_indent=" " * 8, subsequent_indent=" " * 8)


def help_text(name):
    """The ``--help`` text: usage, then every setting of the native table
    that the command line can give (not ``sockets``, which needs objects)."""
    rows = [row for row in _maitre.settings_table() if row[1] != "sockets"]
    options = "\n".join(_option_help(*row) for row in rows)
    return _USAGE.format(name=name) + "\n" + options + "\n" + _TAIL


def show_help(stream, name, error=None):
    if error is not None:
        print(f"Error: {error}\n", file=stream)
    print(help_text(name), file=stream)


def show_exception(stream):
    """Describe the exception being handled (one that importing the
    application raised) and its arguments."""
    exc_type, exc_value = sys.exc_info()[:2]
    print(f"There was an exception ({exc_type.__name__}) importing your module.\n", file=stream)
    args = getattr(exc_value, "args", None)
    if args:
        print("It had these arguments: ", file=stream)
        for number, arg in enumerate(args, start=1):
            print(f"{number}. {arg}\n", file=stream)
    else:
        print("It had no arguments.", file=stream)


def _app_name(kw, args):
    """The one application named by ``--app`` or the positional argument, or
    the error to report."""
    if "app" in kw:
        name = kw.pop("app")
        if not name:
            return None, "Specify an application"
        if args:
            return None, "Provide only one WSGI app"
        return name, None
    if len(args) != 1:
        return None, "Specify one application only"
    return args[0], None


def run(argv=sys.argv, _serve=serve):
    """The command-line entry point; returns the exit status."""
    name = os.path.basename(argv[0])
    try:
        kw, args = Adjustments.parse_args(argv[1:])
    except getopt.GetoptError as exc:
        show_help(sys.stderr, name, str(exc))
        return 1

    if kw["help"]:
        show_help(sys.stdout, name)
        return 0

    app_name, error = _app_name(kw, args)
    if error is not None:
        show_help(sys.stderr, name, error)
        return 1

    # Without a level of its own the logger would inherit WARNING from the
    # root logger and "Serving on ..." would never show.
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    sys.path.append(os.getcwd())
    call = kw.pop("call")
    del kw["help"]
    if _master.wanted(kw):
        return _serve_forked(app_name, call, kw, _serve)
    try:
        app = pkgutil.resolve_name(app_name)
    except (ValueError, ImportError, AttributeError) as exc:
        show_help(sys.stderr, name, str(exc))
        show_exception(sys.stderr)
        return 1
    if call:
        app = app()

    stuck_before = _server.stuck_workers
    _serve(app, **kw)
    if _server.stuck_workers > stuck_before:
        _master.exit_now(0)
    return 0


def _serve_forked(app_name, call, kw, _serve):
    """Serve with a master process: the application is imported by each
    worker after fork (never by the master), so a reload loads new code."""
    loader = _master.AppLoader(lambda: _load_in_worker(app_name, call), app_name)
    try:
        _serve(loader, **kw)
    except _master.WorkerBootError as exc:
        print(f"Error: {exc}: the application could not be loaded (see above)", file=sys.stderr)
        return 1
    return 0


def _load_in_worker(app_name, call):
    """Import the application in a worker; on the errors a single process
    reports with its help text, say why (briefly: every worker says it) and
    exit with the master's boot-error status."""
    try:
        app = pkgutil.resolve_name(app_name)
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"Error: {exc}\n", file=sys.stderr)
        show_exception(sys.stderr)
        raise SystemExit(_master.BOOT_ERROR) from exc
    return app() if call else app
