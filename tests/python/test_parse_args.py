"""Adjustments.parse_args: Waitress 3.0.2's getopt pre-parsing."""

import getopt

import pytest

from maitre import _maitre
from maitre.adjustments import Adjustments

parse = Adjustments.parse_args


def test_no_args():
    assert parse([]) == ({"call": False, "help": False}, [])


def test_help_and_call():
    assert parse(["--help"]) == ({"call": False, "help": True}, [])
    assert parse(["--call"]) == ({"call": True, "help": False}, [])
    assert parse(["--call", "--help"]) == ({"call": True, "help": True}, [])


def test_boolean_flags():
    kw, _ = parse(["--expose-tracebacks", "--no-ipv6"])
    assert kw["expose_tracebacks"] == "true"
    assert kw["ipv6"] == "false"


def test_last_boolean_wins():
    assert parse(["--no-ipv6", "--ipv6"])[0]["ipv6"] == "true"


def test_values_stay_strings():
    kw, args = parse(["--host=localhost", "--port=80", "--unix-socket-perms=777"])
    assert kw == {
        "call": False,
        "help": False,
        "host": "localhost",
        "port": "80",
        "unix_socket_perms": "777",
    }
    assert args == []


def test_value_as_next_argument():
    assert parse(["--port", "80", "app:app"]) == (
        {"call": False, "help": False, "port": "80"},
        ["app:app"],
    )


def test_listen_once_has_leading_space():
    assert parse(["--listen=test:80"])[0]["listen"] == " test:80"


def test_listen_repeated_is_joined():
    kw, _ = parse(["--listen=test:80", "--listen", "test:8080"])
    assert kw["listen"] == " test:80 test:8080"


def test_unique_prefix():
    assert parse(["--thr=3"])[0]["threads"] == "3"
    assert parse(["--no-expose"])[0]["expose_tracebacks"] == "false"


def test_ambiguous_prefix():
    with pytest.raises(getopt.GetoptError, match=r"^option --t not a unique prefix$"):
        parse(["--t=3"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--bogus"], "option --bogus not recognized"),
        (["--no-host"], "option --no-host not recognized"),
        (["--threads"], "option --threads requires argument"),
        (["--expose-tracebacks=yes"], "option --expose-tracebacks must not have an argument"),
    ],
)
def test_errors(argv, message):
    with pytest.raises(getopt.GetoptError) as info:
        parse(argv)
    assert str(info.value) == message


def test_stops_at_first_positional():
    kw, args = parse(["--port=80", "app:app", "--threads=2"])
    assert kw == {"call": False, "help": False, "port": "80"}
    assert args == ["app:app", "--threads=2"]


def test_app_option():
    kw, args = parse(["--app=pkg.mod:app", "--port=80"])
    assert kw["app"] == "pkg.mod:app"
    assert args == []


def test_every_setting_is_an_option():
    for name, kind, _, _ in _maitre.settings_table():
        option = "--" + name.replace("_", "-")
        if kind == "bool":
            assert parse([option])[0][name] == "true"
            assert parse(["--no-" + option[2:]])[0][name] == "false"
        else:
            assert parse([option + "=v"])[0][name] == ("v" if name != "listen" else " v")


def test_parsed_args_feed_adjustments():
    kw, _ = parse(["--listen=127.0.0.1:0", "--threads=3", "--no-ipv6", "--unix-socket-perms=640"])
    del kw["call"], kw["help"]
    adj = Adjustments(**kw)
    assert (adj.threads, adj.ipv6, adj.unix_socket_perms) == (3, False, 0o640)
    assert [s[3] for s in adj.listen] == [("127.0.0.1", 0)]
