"""maitre-serve: the command-line runner, with a fake serve()."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from maitre import _maitre, runner

APP_MODULE = textwrap.dedent(
    """
    def app(environ, start_response):
        pass

    def returns_app():
        return app

    class Holder:
        inner = app
    """
)


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    """A uniquely named module with ``app``, ``returns_app`` and
    ``Holder.inner``, importable from the current directory."""
    name = f"runner_app_{os.getpid()}_{id(tmp_path) % 100000}"
    (tmp_path / f"{name}.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def maitre_logger():
    """The maitre logger's level, put back after the test."""
    logger = logging.getLogger("maitre")
    old = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(old)


class FakeServe:
    def __init__(self):
        self.calls = []

    def __call__(self, app, **kw):
        self.calls.append((app, kw))


def run(argv, serve=None):
    return runner.run(["maitre-serve"] + argv, _serve=serve or FakeServe())


def test_help_to_stdout(capsys):
    assert run(["--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage:\n\n    maitre-serve [OPTS] MODULE:OBJECT\n")
    assert err == ""


def test_help_lists_every_setting(capsys):
    run(["--help"])
    out = capsys.readouterr().out
    for name, kind, _, _ in _maitre.settings_table():
        option = "--" + name.replace("_", "-")
        if kind == "sockets":
            assert option not in out
        elif kind == "bool":
            assert f"    {option}, --no-{option[2:]}\n" in out
        else:
            assert f"    {option}=" in out
    for standard in ("--help", "--call", "--app=MODULE:OBJECT"):
        assert standard in out


def test_help_says_listen_repeats(capsys):
    run(["--help"])
    out = capsys.readouterr().out
    listen = out[out.index("--listen=") :].split("\n\n")[0]
    assert "several times" in listen


def test_help_wins_over_missing_app(capsys, maitre_logger):
    serve = FakeServe()
    assert run(["--help", "a:b", "c:d"], serve) == 0
    assert serve.calls == []


def test_unknown_option(capsys):
    serve = FakeServe()
    assert run(["--bad-opt"], serve) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: option --bad-opt not recognized\n\nUsage:\n")
    assert serve.calls == []


def test_ambiguous_option(capsys):
    assert run(["--t=1", "x:y"]) == 1
    assert capsys.readouterr().err.startswith("Error: option --t not a unique prefix\n")


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "Specify one application only"),
        (["a:a", "b:b"], "Specify one application only"),
        (["--app=a:a", "b:b"], "Provide only one WSGI app"),
        (["--app="], "Specify an application"),
    ],
)
def test_application_count_errors(capsys, argv, message):
    serve = FakeServe()
    assert run(argv, serve) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {message}\n\nUsage:\n")
    assert serve.calls == []


def test_options_after_the_app_are_not_options(capsys):
    # getopt stops at the first positional: the option is a second app.
    assert run(["x:app", "--port=80"]) == 1
    assert capsys.readouterr().err.startswith("Error: Specify one application only\n")


def test_missing_module(capsys, maitre_logger):
    name = "no_such_module_for_maitre"
    assert run([f"{name}:a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: No module named '{name}'\n\nUsage:\n")
    assert (
        "There was an exception (ModuleNotFoundError) importing your module.\n\n"
        "It had these arguments: \n"
        f"1. No module named '{name}'\n"
    ) in err


def test_missing_attribute(capsys, app_module, maitre_logger):
    assert run([f"{app_module}:nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: module '{app_module}' has no attribute 'nope'\n")
    assert "There was an exception (AttributeError) importing your module." in err


def test_bad_name_format(capsys, maitre_logger):
    assert run(["not a name:x"]) == 1
    assert "There was an exception (ValueError) importing your module." in capsys.readouterr().err


def test_show_exception_without_arguments(capsys):
    try:
        raise ImportError
    except ImportError:
        runner.show_exception(sys.stderr)
    assert capsys.readouterr().err == (
        "There was an exception (ImportError) importing your module.\n\n"
        "It had no arguments.\n"
    )


def test_simple_app(app_module, maitre_logger):
    serve = FakeServe()
    assert run(["--port=80", f"{app_module}:app"], serve) == 0
    module = sys.modules[app_module]
    assert serve.calls == [(module.app, {"port": "80"})]


def test_app_option_resolves(app_module, maitre_logger):
    serve = FakeServe()
    assert run([f"--app={app_module}:app", "--threads=2"], serve) == 0
    assert serve.calls == [(sys.modules[app_module].app, {"threads": "2"})]


def test_call_uses_the_factory(app_module, maitre_logger):
    serve = FakeServe()
    assert run(["--call", f"{app_module}:returns_app"], serve) == 0
    assert serve.calls[0][0] is sys.modules[app_module].app
    assert serve.calls[0][1] == {}


def test_dotted_attribute(app_module, maitre_logger):
    serve = FakeServe()
    assert run([f"{app_module}:Holder.inner"], serve) == 0
    assert serve.calls[0][0] is sys.modules[app_module].app


def test_dotted_form_without_colon(app_module, maitre_logger):
    serve = FakeServe()
    assert run([f"{app_module}.app"], serve) == 0
    assert serve.calls[0][0] is sys.modules[app_module].app


def test_current_directory_is_on_path(app_module, maitre_logger):
    assert os.getcwd() not in sys.path
    assert run([f"{app_module}:app"]) == 0
    assert os.getcwd() in sys.path


def test_listen_options_reach_serve(app_module, maitre_logger):
    serve = FakeServe()
    argv = ["--listen=127.0.0.1:1", "--listen=[::1]:2", "--no-ipv4", f"{app_module}:app"]
    assert run(argv, serve) == 0
    assert serve.calls[0][1] == {"listen": " 127.0.0.1:1 [::1]:2", "ipv4": "false"}


def test_logger_set_to_info_when_unset(app_module, maitre_logger):
    run([f"{app_module}:app"])
    assert maitre_logger.level == logging.INFO


def test_logger_level_kept_when_set(app_module, maitre_logger):
    maitre_logger.setLevel(logging.ERROR)
    run([f"{app_module}:app"])
    assert maitre_logger.level == logging.ERROR


def test_bad_value_reaches_serve_uncaught(app_module, maitre_logger):
    # Values are cast by serve(); the runner does not catch its errors.
    with pytest.raises(ValueError, match="invalid literal for int"):
        runner.run(["maitre-serve", "--threads=abc", f"{app_module}:app"])


def test_program_name_from_argv0(capsys):
    runner.run(["/usr/local/bin/some-name", "--help"])
    assert "    some-name [OPTS] MODULE:OBJECT" in capsys.readouterr().out


def _python_m(*args):
    return subprocess.run(
        [sys.executable, "-m", "maitre", *args], capture_output=True, text=True, timeout=60
    )


def test_python_m_help():
    done = _python_m("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage:\n\n    python -m maitre [OPTS] MODULE:OBJECT\n")


def test_python_m_error_exit_status():
    done = _python_m()
    assert done.returncode == 1
    assert done.stderr.startswith("Error: Specify one application only\n")
