"""Adjustments: every setting with Waitress's casts, the combination rules,
pre-bound sockets, listen resolution and the warnings."""

import re
import socket
import warnings

import pytest

from conftest import needs_ipv6, needs_unix
from maitre import _maitre, adjustments
from maitre.adjustments import Adjustments


def make(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Adjustments(**kw)


def bind_pairs(adj):
    return [sockaddr[:2] for (_, _, _, sockaddr) in adj.listen]


# -- valid values: strings as from the CLI or PasteDeploy --------------------

STRING_CASES = [
    ({"port": "8080"}, "port", 8080),
    ({"port": " 9000 "}, "port", 9000),
    ({"host": "127.0.0.1"}, "host", "127.0.0.1"),
    ({"ipv4": "no", "listen": "*:8080"}, "ipv4", False),
    ({"ipv6": "off"}, "ipv6", False),
    ({"ipv6": " TRUE "}, "ipv6", True),
    ({"threads": "5"}, "threads", 5),
    ({"threads": "1_0"}, "threads", 10),
    ({"trusted_proxy": "10.0.0.1"}, "trusted_proxy", "10.0.0.1"),
    ({"trusted_proxy": ""}, "trusted_proxy", None),
    ({"trusted_proxy": "*", "trusted_proxy_count": "2"}, "trusted_proxy_count", 2),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": "X-Forwarded-For x-forwarded-by"},
        "trusted_proxy_headers",
        {"x-forwarded-for", "x-forwarded-by"},
    ),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": "x-forwarded-for\nx-forwarded-host"},
        "trusted_proxy_headers",
        {"x-forwarded-for", "x-forwarded-host"},
    ),
    ({"log_untrusted_proxy_headers": "yes"}, "log_untrusted_proxy_headers", True),
    ({"clear_untrusted_proxy_headers": "false"}, "clear_untrusted_proxy_headers", False),
    ({"clear_untrusted_proxy_headers": "0"}, "clear_untrusted_proxy_headers", False),
    ({"url_scheme": "https"}, "url_scheme", "https"),
    ({"url_prefix": "///foo/"}, "url_prefix", "/foo"),
    ({"url_prefix": "  /a/b//  "}, "url_prefix", "/a/b"),
    ({"url_prefix": "/"}, "url_prefix", "/"),
    ({"url_prefix": "   "}, "url_prefix", ""),
    ({"backlog": "20"}, "backlog", 20),
    ({"recv_bytes": "200"}, "recv_bytes", 200),
    ({"send_bytes": "300"}, "send_bytes", 300),
    ({"outbuf_overflow": "400"}, "outbuf_overflow", 400),
    ({"outbuf_high_watermark": "500"}, "outbuf_high_watermark", 500),
    ({"inbuf_overflow": "600"}, "inbuf_overflow", 600),
    ({"connection_limit": "1000"}, "connection_limit", 1000),
    ({"cleanup_interval": "11"}, "cleanup_interval", 11),
    ({"channel_timeout": "12"}, "channel_timeout", 12),
    ({"header_timeout": "13"}, "header_timeout", 13),
    ({"log_socket_errors": "false"}, "log_socket_errors", False),
    ({"max_request_header_size": "1300"}, "max_request_header_size", 1300),
    ({"max_request_body_size": "1400"}, "max_request_body_size", 1400),
    ({"expose_tracebacks": "on"}, "expose_tracebacks", True),
    ({"ident": "abc"}, "ident", "abc"),
    ({"ident": ""}, "ident", None),
    ({"asyncore_loop_timeout": "5"}, "asyncore_loop_timeout", 5),
    ({"asyncore_use_poll": "t"}, "asyncore_use_poll", True),
    ({"unix_socket": "/tmp/x.sock"}, "unix_socket", "/tmp/x.sock"),
    ({"unix_socket_perms": "777"}, "unix_socket_perms", 0o777),
    ({"unix_socket_perms": "0o640"}, "unix_socket_perms", 0o640),
    ({"channel_request_lookahead": "5"}, "channel_request_lookahead", 5),
    ({"server_name": "example.com"}, "server_name", "example.com"),
]


@pytest.mark.parametrize("kw,attr,expected", STRING_CASES)
def test_string_values_are_cast(kw, attr, expected):
    assert getattr(make(**kw), attr) == expected


# -- valid values: native Python values --------------------------------------

NATIVE_CASES = [
    ({"port": 0}, "port", 0),
    ({"threads": 8}, "threads", 8),
    ({"threads": 3.9}, "threads", 3),
    ({"ipv6": False}, "ipv6", False),
    ({"ipv4": 1}, "ipv4", True),
    ({"log_socket_errors": 0}, "log_socket_errors", False),
    ({"log_socket_errors": None}, "log_socket_errors", False),
    ({"expose_tracebacks": True}, "expose_tracebacks", True),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": {"forwarded"}},
        "trusted_proxy_headers",
        {"forwarded"},
    ),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": ["X-Forwarded-Proto"]},
        "trusted_proxy_headers",
        {"x-forwarded-proto"},
    ),
    ({"trusted_proxy": "*", "trusted_proxy_count": 3}, "trusted_proxy_count", 3),
    ({"unix_socket_perms": 0o660}, "unix_socket_perms", 0o660),
    ({"ident": None}, "ident", None),
    ({"ident": "x" * 3}, "ident", "xxx"),
    ({"url_scheme": "https"}, "url_scheme", "https"),
    ({"channel_timeout": 1}, "channel_timeout", 1),
]


@pytest.mark.parametrize("kw,attr,expected", NATIVE_CASES)
def test_native_values_are_cast(kw, attr, expected):
    assert getattr(make(**kw), attr) == expected


def test_defaults_have_waitress_shape():
    adj = make()
    assert adj.host == "0.0.0.0"
    assert adj.port == 8080
    assert adj.threads == 4
    assert adj.trusted_proxy is None
    assert adj.trusted_proxy_count == 1
    assert adj.trusted_proxy_headers == set()
    assert adj.clear_untrusted_proxy_headers is True
    assert adj.url_prefix == ""
    assert adj.unix_socket is None
    assert adj.unix_socket_perms == 0o600
    assert adj.sockets == []
    assert adj.server_name == "waitress.invalid"
    assert bind_pairs(adj) == [("0.0.0.0", 8080)]


def test_default_ident_is_maitre():
    # Decision: Server: maitre unless ident says otherwise.
    assert make().ident == "maitre"


def test_every_setting_is_an_attribute():
    adj = make()
    for name, *_ in _maitre.settings_table():
        assert hasattr(adj, name), name


def test_class_defaults_are_unchanged_by_instances():
    adj = make(host="127.0.0.1", port=1234)
    assert adj.port == 1234
    assert Adjustments.port == 8080
    assert Adjustments.listen == ["0.0.0.0:8080"]
    assert Adjustments.threads == 4


def test_params_follow_the_native_table():
    names = [name for name, _ in Adjustments._params]
    assert names == [row[0] for row in _maitre.settings_table()]
    flags = {name for name, cast in Adjustments._params if cast is adjustments.asbool}
    assert flags == {row[0] for row in _maitre.settings_table() if row[1] == "bool"}
    assert Adjustments._param_map["unix_socket_perms"] is adjustments.asoctal


def test_settings_are_kept_for_the_native_server():
    sock = socket.socket()
    try:
        adj = make(threads="3", sockets=[sock])
        assert adj._pairs == [("threads", "3")]
    finally:
        sock.close()


# -- invalid values -----------------------------------------------------------

INVALID_CASES = [
    ({"threads": "abc"}, ValueError, "invalid literal for int() with base 10: 'abc'"),
    ({"port": "http"}, ValueError, "invalid literal for int() with base 10: 'http'"),
    (
        {"threads": None},
        TypeError,
        "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'",
    ),
    (
        {"backlog": [1]},
        TypeError,
        "int() argument must be a string, a bytes-like object or a real number, not 'list'",
    ),
    ({"unix_socket_perms": "9"}, ValueError, "invalid literal for int() with base 8: '9'"),
    (
        {"unix_socket_perms": True},
        TypeError,
        "int() can't convert non-string with explicit base",
    ),
    ({"listen": 5}, TypeError, "'int' object is not iterable"),
    ({"nope": True}, ValueError, "Unknown adjustment 'nope'"),
    (
        {"trusted_proxy_count": 1},
        ValueError,
        "trusted_proxy_count has no meaning without setting trusted_proxy",
    ),
    (
        {"trusted_proxy_headers": "forwarded"},
        ValueError,
        "trusted_proxy_headers has no meaning without setting trusted_proxy",
    ),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": "forwarded x-forwarded-for"},
        ValueError,
        "The Forwarded proxy header and the X-Forwarded-{By,Host,Proto,Port,For} "
        "headers are mutually exclusive. Can't trust both!",
    ),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": "x-forwarded-unknown"},
        ValueError,
        "Received unknown trusted_proxy_headers value (x-forwarded-unknown) expected one of ",
    ),
    ({"listen": "127.0.0.1:test"}, ValueError, "Invalid host/port specified."),
    ({"listen": "bad host!:80"}, ValueError, "Invalid host/port specified."),
    ({"ipv4": False, "listen": "127.0.0.1:8080"}, ValueError, "Invalid host/port specified."),
    ({"ipv6": False, "listen": "[::]:8080"}, ValueError, "Invalid host/port specified."),
    # maitre's own range checks (values that cannot work).
    ({"port": 70000}, ValueError, "port must be between 0 and 65535"),
    ({"threads": 0}, ValueError, "threads must be at least 1"),
]


@pytest.mark.parametrize("kw,error,message", INVALID_CASES)
def test_invalid_values(kw, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make(**kw)


@pytest.mark.xfail(
    strict=True,
    reason="Waitress raises AttributeError (int has no strip); the native table says ValueError",
)
def test_url_prefix_not_a_string_is_attribute_error():
    with pytest.raises(AttributeError, match="'int' object has no attribute 'strip'"):
        make(url_prefix=5)


def test_unknown_name_is_error_even_with_good_ones():
    with pytest.raises(ValueError, match=r"^Unknown adjustment 'bogus'$"):
        make(threads=2, bogus=1)


# -- combinations -------------------------------------------------------------

COMBINATIONS = [
    (
        {"host": "localhost", "listen": "127.0.0.1:80"},
        "host or port may not be set if listen is set.",
    ),
    ({"port": "80", "listen": "127.0.0.1:80"}, "host or port may not be set if listen is set."),
    ({"listen": "127.0.0.1:80", "sockets": "S"}, "socket may not be set if listen is set."),
    ({"host": "localhost", "sockets": "S"}, "host or port may not be set if sockets is set."),
    ({"unix_socket": "/tmp/x", "sockets": "S"}, "unix_socket may not be set if sockets is set"),
    ({"unix_socket": "/tmp/x", "port": 80}, "unix_socket may not be set if host or port is set"),
    (
        {"unix_socket": "/tmp/x", "listen": "127.0.0.1:80"},
        "unix_socket may not be set if listen is set",
    ),
]


@pytest.mark.parametrize("kw,message", COMBINATIONS)
def test_combination_errors(kw, message):
    sock = socket.socket()
    kw = {k: ([sock] if v == "S" else v) for k, v in kw.items()}
    try:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            make(**kw)
    finally:
        sock.close()


def test_combination_checked_before_values():
    # Waitress checks combinations before casting anything.
    with pytest.raises(ValueError, match="host or port may not be set if listen is set"):
        make(port="not a number", listen="127.0.0.1:80")


# -- sockets ------------------------------------------------------------------


def test_sockets_keeps_only_socket_objects():
    a, b = socket.socket(), socket.socket()
    try:
        adj = make(sockets=[a, {"not": "a socket"}, "x", b])
        assert adj.sockets == [a, b]
    finally:
        a.close()
        b.close()


@needs_unix
def test_sockets_may_not_mix_inet_and_unix():
    a, b = socket.socket(), socket.socket(socket.AF_UNIX)
    try:
        with pytest.raises(ValueError, match=r"^Internet and UNIX sockets may not be mixed\.$"):
            make(sockets=[a, b])
    finally:
        a.close()
        b.close()


def test_sockets_must_be_stream():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(
            ValueError, match=r"^Only Internet or UNIX stream sockets may be used\.$"
        ):
            make(sockets=[udp])
    finally:
        udp.close()


@needs_unix
def test_sockets_all_unix_is_fine():
    a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        assert make(sockets=[a, b]).sockets == [a, b]
    finally:
        a.close()
        b.close()


def test_sockets_not_iterable():
    with pytest.raises(TypeError):
        make(sockets=5)


def test_empty_sockets_keeps_default_listen():
    adj = make(sockets=[])
    assert adj.sockets == []
    assert bind_pairs(adj) == [("0.0.0.0", 8080)]


# -- listen resolution --------------------------------------------------------


def test_host_and_port_make_listen():
    assert bind_pairs(make(host="127.0.0.1", port="9090")) == [("127.0.0.1", 9090)]


def test_port_alone_uses_default_host():
    assert bind_pairs(make(port=9091)) == [("0.0.0.0", 9091)]


def test_bare_host_takes_default_port():
    assert bind_pairs(make(listen="127.0.0.1")) == [("127.0.0.1", 8080)]


def test_multiple_listen_entries_in_order():
    adj = make(listen="127.0.0.1:9090 127.0.0.1:8080")
    assert bind_pairs(adj) == [("127.0.0.1", 9090), ("127.0.0.1", 8080)]


def test_listen_as_list_and_lines():
    adj = make(listen=["127.0.0.1:1 127.0.0.1:2", "127.0.0.1:3"])
    assert bind_pairs(adj) == [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
    adj = make(listen="127.0.0.1:4\n  127.0.0.1:5\n")
    assert bind_pairs(adj) == [("127.0.0.1", 4), ("127.0.0.1", 5)]


def test_listen_duplicates_are_merged():
    assert bind_pairs(make(listen="127.0.0.1:8080 127.0.0.1:8080")) == [("127.0.0.1", 8080)]


def test_listen_port_zero_is_never_merged():
    adj = make(listen="127.0.0.1:0 127.0.0.1:0")
    assert bind_pairs(adj) == [("127.0.0.1", 0), ("127.0.0.1", 0)]


def test_listen_service_name():
    assert bind_pairs(make(listen="127.0.0.1:http")) == [("127.0.0.1", 80)]


def test_listen_tuples_are_sockinfo():
    (family, socktype, proto, sockaddr), = make(listen="127.0.0.1:80").listen
    assert (family, socktype, proto, sockaddr) == (
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, ("127.0.0.1", 80)
    )


@needs_ipv6
def test_listen_bracketed_ipv6():
    adj = make(listen="[::1]:8081")
    assert bind_pairs(adj) == [("::1", 8081)]
    assert adj.listen[0][0] == socket.AF_INET6


@needs_ipv6
def test_listen_bracketed_ipv6_without_port():
    assert bind_pairs(make(listen="[::1]")) == [("::1", 8080)]


@needs_ipv6
def test_host_ipv6_with_port():
    assert bind_pairs(make(host="::1", port=0)) == [("::1", 0)]


class FakeGetaddrinfo:
    def __init__(self, results):
        self.results = results
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.results


def test_wildcard_asks_for_every_address(monkeypatch):
    fake = FakeGetaddrinfo([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", 8000))])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    make(listen="*:8000")
    assert fake.calls == [
        (None, "8000", socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE)
    ]


@pytest.mark.parametrize(
    "kw,family",
    [
        ({}, socket.AF_UNSPEC),
        ({"ipv6": False}, socket.AF_INET),
        ({"ipv4": False}, socket.AF_INET6),
        ({"ipv4": False, "ipv6": False}, socket.AF_UNSPEC),
    ],
)
def test_family_from_ipv4_ipv6(monkeypatch, kw, family):
    fake = FakeGetaddrinfo([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", 8000))])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    make(listen="*:8000", **kw)
    assert fake.calls[0][2] == family


def test_duplicates_ignore_the_zone(monkeypatch):
    six = socket.AF_INET6
    fake = FakeGetaddrinfo(
        [
            (six, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 80, 0, 2)),
            (six, socket.SOCK_STREAM, 6, "", ("fe80::1%lo0", 80, 0, 1)),
            (six, socket.SOCK_STREAM, 6, "", ("fe80::2", 80, 0, 0)),
        ]
    )
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    adj = make(listen="fe80::1%eth0:80")
    assert [s[3][0] for s in adj.listen] == ["fe80::1%eth0", "fe80::2"]


def test_getaddrinfo_failure_is_invalid_host_port(monkeypatch):
    def fail(*args):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ValueError, match=r"^Invalid host/port specified\.$"):
        make(listen="nowhere.invalid:80")


def test_ipv4_disabled_without_ipv6(monkeypatch):
    monkeypatch.setattr(adjustments, "HAS_IPV6", False)
    with pytest.raises(
        ValueError,
        match=r"^IPv4 is disabled but IPv6 is not available\. Cowardly refusing to start\.$",
    ):
        make(ipv4=False)


def test_ipv6_only_without_ipv6_support_asks_for_any_family(monkeypatch):
    monkeypatch.setattr(adjustments, "HAS_IPV6", False)
    fake = FakeGetaddrinfo([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", 1))])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    make(listen="*:1", ipv4=True, ipv6=False)
    assert fake.calls[0][2] == socket.AF_INET


@pytest.mark.parametrize(
    "entry,expected",
    [
        ("127.0.0.1:80", ("127.0.0.1", "80")),
        ("127.0.0.1", ("127.0.0.1", "8080")),
        ("[::1]:80", ("::1", "80")),
        ("[::1]", ("::1", "8080")),
        ("*:80", (None, "80")),
        ("localhost:http", ("localhost", "http")),
    ],
)
def test_split_listen_entry(entry, expected):
    assert adjustments.split_listen_entry(entry, 8080) == expected


# -- warnings -----------------------------------------------------------------


def test_send_bytes_is_deprecated():
    with pytest.warns(DeprecationWarning, match="send_bytes will be removed in a future release"):
        Adjustments(send_bytes=1)


def test_trusted_proxy_without_headers_warns_and_trusts_proto():
    with pytest.warns(DeprecationWarning, match="Implicitly trusting X-Forwarded-Proto"):
        adj = Adjustments(trusted_proxy="localhost")
    assert adj.trusted_proxy_headers == {"x-forwarded-proto"}


def test_no_warning_by_default():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Adjustments(threads=2)


# -- helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, False),
        (True, True),
        (False, False),
        ("True", True),
        ("false", False),
        ("yes", True),
        ("on", True),
        (" Y ", True),
        ("t", True),
        (1, True),
        ("0", False),
        ("nope", False),
    ],
)
def test_asbool(value, expected):
    assert adjustments.asbool(value) is expected


@pytest.mark.parametrize("value", ["1", "yes", "No", " on ", "off", "T", "2", ""])
def test_asbool_agrees_with_native_table(value):
    assert make(ipv6=value).ipv6 is adjustments.asbool(value)


def test_truthy():
    assert adjustments.truthy == frozenset(("t", "true", "y", "yes", "on", "1"))


def test_asoctal():
    assert adjustments.asoctal("660") == 0o660
    assert adjustments.asoctal(0o660) == 0o660
    with pytest.raises(TypeError):
        adjustments.asoctal(True)
    with pytest.raises(ValueError):
        adjustments.asoctal("8")


def test_aslist_and_aslist_cronly():
    assert adjustments.aslist("a b\nc  d\n\n") == ["a", "b", "c", "d"]
    assert adjustments.aslist(["a b", "c"]) == ["a", "b", "c"]
    assert adjustments.aslist_cronly("a b\n c \n\n") == ["a b", "c"]
    assert adjustments.aslist_cronly(("x", "y z")) == ["x", "y z"]


def test_asset():
    assert adjustments.asset("a b a") == {"a", "b"}


@pytest.mark.parametrize(
    "value,expected", [(0, None), ("", None), (None, None), ("x", "x"), (5, "5")]
)
def test_str_iftruthy(value, expected):
    assert adjustments.str_iftruthy(value) == expected


@pytest.mark.parametrize(
    "value,expected", [("", ""), ("  ", ""), ("/", "/"), ("foo", "/foo"), ("//foo//", "/foo")]
)
def test_slash_fixed_str(value, expected):
    assert adjustments.slash_fixed_str(value) == expected


def test_as_socket_list():
    sock = socket.socket()
    try:
        assert adjustments.as_socket_list([sock, 1, None]) == [sock]
    finally:
        sock.close()
