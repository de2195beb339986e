"""Settings ("adjustments") in Waitress's shape.

The native module validates and casts every setting (one table, shared with
the Rust engine); this module adds what only Python can do: the socket
objects of ``sockets``, the getaddrinfo resolution of ``listen``, the
DeprecationWarnings, and the command-line pre-parsing of ``maitre-serve``.
"""

import getopt
import socket
import warnings

from . import _maitre

__all__ = [
    "Adjustments",
    "as_socket_list",
    "asbool",
    "aslist",
    "aslist_cronly",
    "asoctal",
    "asset",
    "slash_fixed_str",
    "str_iftruthy",
    "truthy",
]

#: The strings ``asbool`` takes for true (compared stripped and lower-cased).
truthy = frozenset(("t", "true", "y", "yes", "on", "1"))

#: Whether IPv6 can be used at all; ``ipv4=False`` needs it.
HAS_IPV6 = (
    socket.has_ipv6
    and hasattr(socket, "IPPROTO_IPV6")
    and hasattr(socket, "IPV6_V6ONLY")
)

INVALID_HOST_PORT = "Invalid host/port specified."
NO_IPV6 = "IPv4 is disabled but IPv6 is not available. Cowardly refusing to start."
MIXED_SOCKETS = "Internet and UNIX sockets may not be mixed."
UNSUPPORTED_SOCKETS = "Only Internet or UNIX stream sockets may be used."


# The cast helpers below are Waitress's public helpers, for code that imports
# them. Adjustments itself does not use them: the native table casts values
# (with the same rules) so that the CLI, PasteDeploy and serve() all agree.


def asbool(s):
    """True for "t", "true", "y", "yes", "on" or "1" in any case and with
    surrounding whitespace; a bool is returned as is; None is False."""
    if s is None:
        return False
    if isinstance(s, bool):
        return s
    return str(s).strip().lower() in truthy


def asoctal(s):
    """An octal string such as "660" as an int. An int (not a bool) is taken
    as the mode itself: maitre accepts ``unix_socket_perms=0o660`` (Waitress
    raises TypeError there)."""
    if isinstance(s, int) and not isinstance(s, bool):
        return s
    return int(s, 8)


def aslist_cronly(value):
    """A string as its non-empty stripped lines; any other iterable as a list."""
    if isinstance(value, str):
        value = [line.strip() for line in value.splitlines() if line.strip()]
    return list(value)


def aslist(value):
    """Lines, then words: "a b\\nc" gives ["a", "b", "c"]."""
    words = []
    for item in aslist_cronly(value):
        words.extend(item.split())
    return words


def asset(value):
    return set(aslist(value))


def slash_fixed_str(s):
    """One leading slash and no trailing slash ("//foo//" gives "/foo");
    blank stays ""."""
    s = s.strip()
    if not s:
        return s
    return "/" + s.lstrip("/").rstrip("/")


def str_iftruthy(s):
    """``str(s)``, or None when ``s`` is falsy."""
    return str(s) if s else None


def as_socket_list(sockets):
    """Only the ``socket.socket`` instances of ``sockets``."""
    return [sock for sock in sockets if isinstance(sock, socket.socket)]


# settings_table() kinds -> the Waitress cast each stands for.
_CASTS = {
    "str": str,
    "int": int,
    "seconds": int,
    "bool": asbool,
    "list": aslist,
    "octal": asoctal,
    "striftruthy": str_iftruthy,
    "slashfixedstr": slash_fixed_str,
    "set": asset,
    "sockets": as_socket_list,
}


def _class_defaults():
    """Every setting's default, as Waitress's class attributes hold them."""
    values, _ = _maitre.parse_settings([])
    values["trusted_proxy_headers"] = set(values["trusted_proxy_headers"])
    values["sockets"] = []
    return values


class Adjustments:
    """Every setting as an attribute, validated and cast; ``listen`` resolved
    into ``(family, socktype, proto, sockaddr)`` tuples ready to bind."""

    #: ``(name, cast)`` for every setting, in Waitress's order.
    _params = tuple((row[0], _CASTS[row[1]]) for row in _maitre.settings_table())
    _param_map = dict(_params)

    #: Options set on every accepted TCP connection (not a setting).
    socket_options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

    def __init__(self, **kw):
        # Combination errors come first, as in Waitress; the native table
        # never sees socket objects, so "sockets" is checked by name only.
        _maitre.check_combinations(list(kw))
        # Before the native table resolves listen entries for a family that
        # cannot be used.
        if not HAS_IPV6 and not asbool(kw.get("ipv4", True)):
            raise ValueError(NO_IPV6)
        pairs = [(name, value) for name, value in kw.items() if name != "sockets"]
        values, deprecations = _maitre.parse_settings(pairs)
        #: The settings as given, for the native server.
        self._pairs = pairs
        for name, value in values.items():
            setattr(self, name, value)
        self.trusted_proxy_headers = set(values["trusted_proxy_headers"])
        self.sockets = as_socket_list(kw["sockets"]) if "sockets" in kw else []

        self.listen = resolve_listen(self.listen, self.port, self.address_family())

        for text in deprecations:
            warnings.warn(text, DeprecationWarning)
        self.check_sockets(self.sockets)

    def address_family(self):
        """What getaddrinfo is asked for: both families unless only one of
        ``ipv4``/``ipv6`` is on."""
        if self.ipv4 and not self.ipv6:
            return socket.AF_INET
        if not self.ipv4 and self.ipv6 and HAS_IPV6:
            return socket.AF_INET6
        return socket.AF_UNSPEC

    @classmethod
    def parse_args(cls, argv):
        """Pre-parse ``maitre-serve`` arguments with getopt into ``(kw, args)``.

        Values stay strings (the casts happen in ``__init__``); booleans
        become "true"/"false"; repeated ``--listen`` values are joined with
        spaces; ``help`` and ``call`` are always in ``kw``; ``app`` only when
        ``--app`` was given. Parsing stops at the first positional argument.
        Raises ``getopt.GetoptError`` for an unknown or ambiguous option.
        """
        long_opts = ["help", "call", "app="]
        for name, cast in cls._params:
            option = name.replace("_", "-")
            if cast is asbool:
                long_opts += [option, "no-" + option]
            else:
                long_opts.append(option + "=")

        kw = {"help": False, "call": False}
        opts, args = getopt.getopt(argv, "", long_opts)
        for opt, value in opts:
            param = opt[2:].replace("-", "_")
            if param == "listen":
                kw["listen"] = "{} {}".format(kw.get("listen", ""), value)
            elif param in ("help", "call"):
                kw[param] = True
            elif param == "app":
                kw["app"] = value
            elif param.startswith("no_"):
                kw[param[3:]] = "false"
            elif cls._param_map[param] is asbool:
                kw[param] = "true"
            else:
                kw[param] = value
        return kw, args

    @classmethod
    def check_sockets(cls, sockets):
        """Pre-bound sockets must be stream sockets, all Internet or all Unix."""
        inet = unix = unsupported = False
        for sock in sockets:
            stream = sock.type == socket.SOCK_STREAM
            if stream and sock.family in (socket.AF_INET, socket.AF_INET6):
                inet = True
            elif stream and sock.family == getattr(socket, "AF_UNIX", None):
                unix = True
            else:
                unsupported = True
        if inet and unix:
            raise ValueError(MIXED_SOCKETS)
        if unsupported:
            raise ValueError(UNSUPPORTED_SOCKETS)


for _name, _value in _class_defaults().items():
    setattr(Adjustments, _name, _value)
del _name, _value


def split_listen_entry(entry, default_port):
    """``host:port`` split at the last colon, brackets removed from an IPv6
    host; a bare host (or bare ``[v6]``) takes ``default_port``. ``*`` is
    None (every address)."""
    host, port = entry, str(default_port)
    if ":" in entry:
        head, tail = entry.rsplit(":", 1)
        if "]" not in tail:
            host, port = head, tail
    if "[" in host and "]" in host:
        host = host.strip("[").rstrip("]")
    if host == "*":
        host = None
    return host, port


def resolve_listen(entries, default_port, family):
    """Waitress's resolution of ``listen``: getaddrinfo (passive, stream,
    TCP) for each entry, keeping the first of results that share an address
    (ignoring any ``%zone``) and port. Port-0 results are never merged:
    each one binds its own free port."""
    wanted = []
    seen = []
    for entry in entries:
        host, port = split_listen_entry(entry, default_port)
        try:
            infos = socket.getaddrinfo(
                host,
                port,
                family,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                socket.AI_PASSIVE,
            )
        except Exception as exc:
            raise ValueError(INVALID_HOST_PORT) from exc
        for fam, socktype, proto, _, sockaddr in infos:
            key = (sockaddr[0].split("%", 1)[0], sockaddr[1])
            if sockaddr[1] == 0 or key not in seen:
                wanted.append((fam, socktype, proto, sockaddr))
                seen.append(key)
    return wanted
