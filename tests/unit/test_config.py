"""The typed Config and its loader: precedence, parsing, bad values, hooks, reload."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from prefork import config as loader
from prefork.settings import (
    DEFAULTS,
    HOOKS,
    SETTINGS,
    Config,
    ConfigError,
    Hooks,
    make_config,
    parse_size,
)

#: every limit and timeout of the README's "Limits and timeouts" table
README_LIMITS = (
    "max_header_size",
    "max_request_line",
    "max_headers",
    "max_header_line",
    "max_body_size",
    "max_chunk_line",
    "header_timeout",
    "header_min_rate",
    "header_timeout_max",
    "body_timeout",
    "body_min_rate",
    "keep_alive",
    "send_timeout",
    "drain_grace",
    "max_connections",
    "max_concurrency",
    "request_timeout",
)


def write(tmp_path: Path, text: str, name: str = "conf.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- the table -------------------------------------------------------------------


def test_every_field_but_hooks_is_a_setting_with_option_env_and_file_name() -> None:
    names = [f.name for f in dataclasses.fields(Config)]
    assert [s.name for s in SETTINGS] == [n for n in names if n != "hooks"]
    for setting in SETTINGS:
        assert setting.option == "--" + setting.name.replace("_", "-")
        assert setting.env == "PREFORK_" + setting.name.upper()
        assert getattr(DEFAULTS, setting.name) == setting.default
    for name in README_LIMITS:
        assert name in {s.name for s in SETTINGS}


def test_config_is_frozen_and_typed() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.max_body_size = 1  # type: ignore[misc]
    hints = typing.get_type_hints(Config)
    assert hints["max_body_size"] is int
    assert hints["keep_alive"] is float
    assert hints["bind"] == tuple[str, ...]


def test_commands_are_not_settings() -> None:
    names = {s.name for s in SETTINGS}
    assert "check_config" not in names and "print_config" not in names


def test_make_config_parses_by_name_and_refuses_unknown_names() -> None:
    config = make_config(max_body_size="1k", keep_alive="5", xheaders="yes")
    assert (config.max_body_size, config.keep_alive, config.xheaders) == (1024, 5.0, True)
    assert make_config(config, workers=3).max_body_size == 1024
    with pytest.raises(TypeError, match="max_body_sise"):
        make_config(max_body_sise=1)
    with pytest.raises(ConfigError, match=r"^--max-body-size: expected a size"):
        make_config(max_body_size="lots")


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1k", 1024), ("1K", 1024), ("2KiB", 2048), ("1.5m", 1536 * 1024), (7, 7)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


# -- precedence ---------------------------------------------------------------------


def test_precedence_defaults_file_environment_command_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "max_body_size = '1k'\nworkers = 2\ntimeout = 7\nkeep_alive = 9\n")
    assert loader.load({}).config == DEFAULTS
    only_file = loader.load({"config": conf}, {}).config
    assert (only_file.max_body_size, only_file.workers, only_file.timeout) == (1024, 2, 7.0)
    env = {"PREFORK_MAX_BODY_SIZE": "2k", "PREFORK_WORKERS": "3"}
    with_env = loader.load({"config": conf}, env).config
    assert (with_env.max_body_size, with_env.workers, with_env.timeout) == (2048, 3, 7.0)
    cli = {"config": conf, "max_body_size": "3k", "keep_alive": None}
    with_cli = loader.load(cli, env).config
    assert (with_cli.max_body_size, with_cli.workers, with_cli.keep_alive) == (3072, 3, 9.0)


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    conf = write(tmp_path, "max_headers = 7\n")
    assert loader.load({}, {"PREFORK_CONFIG": conf}).config.max_headers == 7


def test_every_setting_is_read_from_the_environment() -> None:
    samples = {
        bool: "1",
        int: "3",
        float: "2.5",
    }
    for setting in SETTINGS:
        kind = typing.get_type_hints(Config)[setting.name]
        if kind in samples and setting.name not in ("unix_socket_mode",):
            config = loader.load({}, {setting.env: samples[kind]}).config
            assert getattr(config, setting.name) == setting.parse(samples[kind]), setting.name


def test_check_config_in_the_environment_is_not_a_command() -> None:
    assert loader.load({}, {"PREFORK_CHECK_CONFIG": "1", "PREFORK_PRINT_CONFIG": "1"}).config == (
        DEFAULTS
    )


def test_bind_list_from_the_environment_keeps_ipv6_brackets() -> None:
    config = loader.load({}, {"PREFORK_BIND": "127.0.0.1:8000, [::1]:8000 unix:/tmp/x.sock"})
    assert config.config.bind == ("127.0.0.1:8000", "[::1]:8000", "unix:/tmp/x.sock")


# -- bad values: one line naming the setting -------------------------------------------

BAD_VALUES = [
    ("workers", "many", "--workers: expected an integer"),
    ("workers", "-1", "--workers: must be >= 0"),
    ("timeout", "-1", "--timeout: must be >= 0"),
    ("timeout", "nan", "--timeout: expected a finite number"),
    ("max_body_size", "ten", "--max-body-size: expected a size"),
    ("max_header_size", "0", "--max-header-size: must be at least 1 byte"),
    ("max_headers", "0", "--max-headers: must be >= 1"),
    ("header_timeout", "-1", "--header-timeout: must be > 0"),
    ("body_min_rate", "fast", "--body-min-rate: expected a size"),
    ("header_timeout_max", "-1", "--header-timeout-max: must be >= 0"),
    ("keep_alive", "x", "--keep-alive: expected a number"),
    ("xheaders", "maybe", "--xheaders: expected true or false"),
    ("log_level", "loud", "--log-level: expected one of"),
    ("interface", "cgi", "--interface: expected one of auto, callback, wsgi"),
    ("unix_socket_mode", "999", "--unix-socket-mode: expected an octal"),
    ("umask", "1000", "--umask: must be between 000 and 777"),
    ("bind", "nohost:port", "--bind:"),
    ("certfile", "/nonexistent.pem", "--certfile: no such file"),
    ("health_live_path", "healthz", "--health-live-path: expected a path starting with '/'"),
    ("forwarded_allow_ips", "10.0.0.0/33", "--forwarded-allow-ips:"),
    ("user", "no-such-user-here", "--user:"),
    ("root_path", "api", "--root-path: expected a path starting with '/'"),
    ("root_path", "/my app", "--root-path: expected a path of visible ASCII"),
    ("root_path", "/api?x", "--root-path: expected a path of visible ASCII without '?'"),
]


@pytest.mark.parametrize(
    ("value", "kept"), [("/api/", "/api"), ("/", ""), ("", ""), ("/a%20b", "/a%20b")]
)
def test_root_path_is_kept_as_a_client_sends_it(value: str, kept: str) -> None:
    assert loader.load({"root_path": value}).config.root_path == kept


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_bad_values_name_the_setting_in_one_line(name: str, value: str, message: str) -> None:
    for source in ("cli", "env"):
        cli, env = (
            ({name: value}, {}) if source == "cli" else ({}, {f"PREFORK_{name.upper()}": value})
        )
        with pytest.raises(ConfigError) as info:
            loader.load(cli, env)
        text = str(info.value)
        assert text.startswith(message), (source, text)
        assert "\n" not in text


def test_combinations_are_checked(tmp_path: Path) -> None:
    pem = write(tmp_path, "x", "cert.pem")
    with pytest.raises(ConfigError, match="^--certfile: is required"):
        loader.load({"keyfile": pem})
    with pytest.raises(ConfigError, match="^--ca-certs: is required with --cert-reqs required"):
        loader.load({"certfile": pem, "cert_reqs": "required"})


def test_seed_is_an_alias_of_callback() -> None:
    assert loader.load({"interface": "seed"}).config.interface == "callback"


# -- config files ------------------------------------------------------------------------


def test_config_file_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        "max_body_sise = 1\n": "unknown setting 'max_body_sise'; did you mean 'max_body_size'?",
        "workers = 'two'\n": "--workers: expected an integer",
        "x = (\n": "SyntaxError",
        "raise RuntimeError('boom')\n": "RuntimeError: boom",
        "config = 'other.py'\n": "cannot name another one",
    }
    for text, message in cases.items():
        conf = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            loader.load({"config": conf})
        assert message in str(info.value), text
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="^--config: no such file"):
        loader.load({"config": str(tmp_path / "missing.py")})


# The shape of the widely copied FastAPI image's gunicorn_conf.py: helper
# variables beside the settings, the way gunicorn config files are written.
HELPER_VARIABLES_FILE = """
import json
import multiprocessing
import os

workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
web_concurrency_str = os.getenv("WEB_CONCURRENCY", None)
host = os.getenv("HOST", "127.0.0.1")
port = os.getenv("PORT", "8000")
use_loglevel = os.getenv("LOG_LEVEL", "info")
cores = multiprocessing.cpu_count()
default_web_concurrency = float(workers_per_core_str) * cores
DEFAULT_PORT = 80

loglevel = use_loglevel
workers = 2
bind = f"{host}:{port}"
keepalive = 5
forwarded_allow_ips = ["10.0.0.1", "10.0.0.0/24"]
log_data = {"loglevel": loglevel, "workers": workers, "bind": bind}
"""


def test_a_gunicorn_file_with_helper_variables_runs(tmp_path: Path) -> None:
    """gunicorn reads the names it knows and ignores the rest; prefork too,
    naming the ignored ones in one warning (upper-case constants unnamed). A
    near miss of a setting is still an error (a typo would run unnoticed)."""
    loaded = loader.load({"config": write(tmp_path, HELPER_VARIABLES_FILE)})
    config = loaded.config
    assert (config.workers, config.bind, config.keep_alive) == (2, ("127.0.0.1:8000",), 5.0)
    assert config.forwarded_allow_ips == "10.0.0.1,10.0.0.0/24"  # (a list, as gunicorn takes)
    [ignored] = [w for w in loaded.warnings if "not settings, ignored" in w]
    assert ignored.endswith(
        "workers_per_core_str, web_concurrency_str, host, port, use_loglevel, cores, "
        "default_web_concurrency, log_data"
    )
    assert "DEFAULT_PORT" not in ignored
    # ... the trusted proxies it names are used (proxy_headers is on by default,
    # as uvicorn's), and would do nothing with --no-proxy-headers: said.
    assert config.proxy_headers and not config.xheaders
    assert not any("no effect" in w for w in loaded.warnings)
    loaded = loader.load({"config": write(tmp_path, HELPER_VARIABLES_FILE), "proxy_headers": False})
    assert any(
        "--forwarded-allow-ips has no effect without --proxy-headers" in w for w in loaded.warnings
    )


def test_a_drain_delay_past_the_graceful_timeout_is_refused() -> None:
    """The master kills at --graceful-timeout: such a worker never drains
    (--drain-delay 1e308 made a TERM never finish)."""
    with pytest.raises(ConfigError, match=r"^--drain-delay: must be less than --graceful-timeout"):
        loader.load({"drain_delay": "1e308"})
    assert loader.load({"drain_delay": "5", "graceful_timeout": "30"}).config.drain_delay == 5


def test_gunicorns_proc_name_none_is_the_default_name(tmp_path: Path) -> None:
    """gunicorn config files say proc_name = None (its default): the master
    was titled "None: master"."""
    conf = write(tmp_path, "proc_name = None\n")
    assert loader.load({"config": conf}).config.proc_name == "prefork"
    assert loader.load({}, {"PREFORK_PROC_NAME": ""}).config.proc_name == "prefork"
    assert loader.load({"proc_name": "shop"}).config.proc_name == "shop"


def test_an_empty_prefork_workers_is_unset() -> None:
    """As WEB_CONCURRENCY= in a compose file (it was 'expected an integer')."""
    assert loader.load({}, {"PREFORK_WORKERS": ""}).config.workers == 0
    assert loader.load({}, {"PREFORK_WORKERS": "0"}).config.workers == 0


def test_a_trusted_network_with_host_bits_is_refused_not_widened() -> None:
    with pytest.raises(ConfigError, match=r"has host bits set: did you mean '10\.0\.0\.0/8'"):
        loader.load({"forwarded_allow_ips": "10.0.0.5/8"})
    assert loader.load({"forwarded_allow_ips": "10.0.0.0/8"}).config


GUNICORN_FILE = """
import multiprocessing

bind = "127.0.0.1:9000"
workers = 2
worker_class = "sync"
keepalive = 5
loglevel = "warning"
accesslog = "-"
preload_app = False
limit_request_line = 4094
limit_request_fields = 50
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'

def helper():
    return 1

def post_fork(server, worker):
    server.log.info("forked %s", worker.pid)

def when_ready(server):
    pass

def pre_request(worker, req):
    worker.log.debug("%s %s", req.method, req.path)

def post_request(worker, req, environ, resp):
    pass

def worker_exit(server, worker):
    pass
"""


def test_a_gunicorn_config_file_loads_unchanged(tmp_path: Path) -> None:
    loaded = loader.load({"config": write(tmp_path, GUNICORN_FILE)}, {})
    config = loaded.config
    assert config.bind == ("127.0.0.1:9000",)
    assert (config.workers, config.keep_alive, config.log_level) == (2, 5.0, "warning")
    assert (config.max_request_line, config.max_headers) == (4094, 50)
    assert config.hooks.names() == [
        "when_ready",
        "post_fork",
        "pre_request",
        "post_request",
        "worker_exit",
    ]
    ignored = [w for w in loaded.warnings if "ignored" in w]
    assert any("'worker_class' = 'sync': threads = 1" in w for w in ignored)
    assert config.threads == 1  # (one request at a time, as gunicorn's sync worker)
    assert any("'access_log_format'" in w for w in ignored)


def test_hooks_with_the_wrong_arguments_are_refused(tmp_path: Path) -> None:
    conf = write(tmp_path, "def post_fork(server):\n    pass\n")
    with pytest.raises(ConfigError, match=r"hook 'post_fork' must accept \(server, worker\)"):
        loader.load({"config": conf})
    conf = write(tmp_path, "post_fork = 3\n")
    with pytest.raises(ConfigError, match="hook 'post_fork' is not callable"):
        loader.load({"config": conf})


def test_a_misspelt_hook_is_a_warning(tmp_path: Path) -> None:
    conf = write(tmp_path, "def post_forks(server, worker):\n    pass\n")
    loaded = loader.load({"config": conf})
    assert loaded.config.hooks == Hooks()
    assert any("did you mean 'post_fork'" in w for w in loaded.warnings)


def test_every_hook_has_gunicorns_signature() -> None:
    assert [f.name for f in dataclasses.fields(Hooks)] == list(HOOKS)
    assert HOOKS["post_request"] == ("worker", "req", "environ", "resp")
    assert HOOKS["pre_fork"] == ("server", "worker")


# -- reload --------------------------------------------------------------------------------


def test_reload_applies_what_it_can_and_keeps_what_needs_a_restart(tmp_path: Path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\nbind = '127.0.0.1:9001'\n")
    old = loader.load({"config": str(conf)}, {}).config
    conf.write_text("workers = 3\nbind = '127.0.0.1:9002'\nmax_body_size = '1k'\n")
    reloaded = loader.reload(old, {"config": str(conf)}, {"PREFORK_TIMEOUT": "9"})
    new = reloaded.config
    assert (new.workers, new.max_body_size, new.timeout) == (3, 1024, 9.0)
    assert new.bind == ("127.0.0.1:9001",)
    assert any(
        re.match(r"--bind changed to .*: needs a restart \(USR2\)", w) for w in reloaded.warnings
    )
    assert set(old.changes(new)) == {"workers", "max_body_size", "timeout"}


def test_the_readme_documents_every_setting_and_hook() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.env}`, `{setting.name}`" in readme, setting.name
        if setting.name != "app":
            assert f"`{setting.option}`" in readme or f"/{setting.option}`" in readme
    for hook, arguments in HOOKS.items():
        assert f"`{hook}({', '.join(arguments)})`" in readme, hook


def test_a_misspelt_setting_is_a_mypy_error(tmp_path: Path) -> None:
    """Config is a real dataclass to mypy: every field typed, a typo caught before it runs."""
    from mypy import api

    code = tmp_path / "uses_config.py"
    code.write_text(
        "from prefork.settings import DEFAULTS\n"
        "size: int = DEFAULTS.max_body_size\n"
        "typo = DEFAULTS.max_body_sise\n"
        "wrong: str = DEFAULTS.max_headers\n"
    )
    out, _err, status = api.run(
        [
            "--no-incremental",
            "--ignore-missing-imports",
            "--python-version",
            "3.10",
            "--cache-dir",
            "/dev/null",
            str(code),
        ]
    )
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2, out
    assert '"Config" has no attribute "max_body_sise"' in errors[0]
    assert ":4:" in errors[1] and "Incompatible types" in errors[1]


def test_a_misspelt_prefork_variable_is_an_error_naming_the_setting() -> None:
    """PREFORK_WORKER=4 (no S) ran with the default worker count, unnoticed."""
    with pytest.raises(ConfigError) as caught:
        loader.load({}, {"PREFORK_WORKER": "4"})
    assert str(caught.value) == (
        "PREFORK_WORKER: not a setting (the environment); did you mean PREFORK_WORKERS?"
    )
    with pytest.raises(ConfigError, match="did you mean PREFORK_LOG_LEVEL"):
        loader.load({}, {"PREFORK_LOGLEVEL": "debug"})  # (gunicorn's name for it)


def test_variables_that_are_not_read_are_named_in_warnings() -> None:
    loaded = loader.load(
        {},
        {
            "PREFORK_SOMETHING_ELSE": "1",
            "PREFORK_CHECK_CONFIG": "1",
            "GUNICORN_CMD_ARGS": "--workers 3",
            "UVICORN_PORT": "8000",
            "UVICORN_WORKERS": "3",
            "UVICORN_APP_DIR": "src",
            "PREFORK_FDS": "3",  # (an upgrade's hand-over, no setting)
            "PREFORK_MAX_BODY_SIZE": "1k",
        },
    )
    assert loaded.config.max_body_size == 1024
    assert loaded.warnings == (
        "PREFORK_CHECK_CONFIG: --check-config is a command, not read from the environment",
        "not settings, ignored (the environment): PREFORK_SOMETHING_ELSE",
        "GUNICORN_CMD_ARGS is gunicorn's and is not read: give the same options on "
        "prefork's command line, or each as PREFORK_<NAME> (prefork --help)",
        "uvicorn's variables are not read: UVICORN_APP_DIR, UVICORN_PORT (use "
        "PREFORK_BIND=host:port), UVICORN_WORKERS (use PREFORK_WORKERS); prefork's are "
        "PREFORK_<NAME> (prefork --help)",
    )
    assert loader.load({}, {"PREFORK_WORKERS": "2", "PATH": "/bin"}).warnings == ()


def test_gunicorn_timeout_0_and_cert_reqs_numbers_are_accepted(tmp_path: Path) -> None:
    """gunicorn's ``timeout = 0`` (no timeout) and ``cert_reqs = ssl.CERT_REQUIRED``
    (an int, 2) were refused ('must be > 0', 'expected one of none, ...'): a
    gunicorn config file that runs unchanged must not stop on them."""
    pem = write(tmp_path, "x", "cert.pem")
    conf = write(
        tmp_path,
        f"import ssl\ntimeout = 0\ncertfile = {pem!r}\nca_certs = {pem!r}\n"
        "cert_reqs = ssl.CERT_REQUIRED\n",
    )
    loaded = loader.load({"config": conf}, {})
    assert (loaded.config.timeout, loaded.config.cert_reqs) == (0.0, "required")
    for given, meant in [(0, "none"), (1, "optional"), (2, "required"), ("2", "required")]:
        assert make_config(cert_reqs=given).cert_reqs == meant
    for bad in (3, -1, True):
        with pytest.raises(ConfigError, match="^--cert-reqs: expected one of"):
            make_config(cert_reqs=bad)
    with pytest.raises(ConfigError, match="^--timeout: must be >= 0"):
        make_config(timeout=-1)


def test_hooks_read_again_unchanged_are_not_a_change(tmp_path: Path) -> None:
    """A HUP reads the config file again: its hooks are new function objects,
    and every HUP logged 'reloaded settings: hooks changed'. Only a change of
    their code counts."""
    path = write(tmp_path, "def post_fork(server, worker):\n    server.log.info('a')\n")
    first = loader.load({"config": path}).config
    again = loader.load({"config": path}).config
    assert first.changes(again) == []
    write(tmp_path, "def post_fork(server, worker):\n    server.log.info('b')\n")
    assert first.changes(loader.load({"config": path}).config) == ["hooks"]


TIANGOLO_HELPERS = """\
import os
graceful_timeout_str = os.getenv("GRACEFUL_TIMEOUT", "120")
max_requests_str = os.getenv("MAX_REQUESTS", "1000")
timeout_s = "90"
graceful_timeout = int(graceful_timeout_str)
max_requests = int(max_requests_str)
timeout = int(timeout_s)
cert_file = os.getenv("NO_SUCH_VARIABLE_FOR_THE_TEST")
if cert_file:
    certfile = cert_file
"""


def test_helpers_named_after_a_setting_are_not_typos(tmp_path: Path) -> None:
    """tiangolo's gunicorn_conf.py (graceful_timeout_str next to
    graceful_timeout) was refused as a typo: a near miss of a name the file
    also assigns (even under an if not taken), or that name plus a suffix, is
    a helper. Other near misses, of prefork's names or gunicorn's, stay errors."""
    loaded = loader.load({"config": write(tmp_path, TIANGOLO_HELPERS)})
    assert (loaded.config.graceful_timeout, loaded.config.max_requests) == (120, 1000)
    [ignored] = [w for w in loaded.warnings if "not settings, ignored" in w]
    assert ignored.endswith("graceful_timeout_str, max_requests_str, timeout_s, cert_file")
    for typo, meant in [
        ("max_requests_jiter = 5", "max_requests_jitter"),
        ("preload_ap = True", "preload_app"),
        ("raw_evn = ['A=1']", "raw_env"),
        ("worker_conections = 10", "worker_connections"),
        ("limit_request_lin = 100", "limit_request_line"),
        ("logconfig_dic = {}", "logconfig_dict"),
    ]:
        with pytest.raises(ConfigError, match=rf"unknown setting .*; did you mean '{meant}'\?$"):
            loader.load({"config": write(tmp_path, typo + "\n")})


GUNICORN_27_FILE = """\
bind = "127.0.0.1:8000"
asgi_lifespan = "off"
websocket_max_message_size = 1048576
control_socket_disable = True
http_protocols = "h1"
dirty_workers = 2
def ssl_context(conf, default_ssl_context_factory):
    return default_ssl_context_factory()
def dirty_post_fork(arbiter, worker):
    pass
"""


def test_gunicorn_27_names_and_values(tmp_path: Path) -> None:
    """gunicorn 27's names mean prefork's settings (asgi_lifespan,
    websocket_max_message_size) or are ignored with gunicorn's warning (they
    were "helper variables?"); its hooks prefork never calls are named, not
    dropped silently; its proxy_protocol values v1, v2, auto are on."""
    loaded = loader.load({"config": write(tmp_path, GUNICORN_27_FILE)})
    assert (loaded.config.lifespan, loaded.config.ws_max_size) == ("off", 1048576)
    assert not any("helper variables" in w for w in loaded.warnings), loaded.warnings
    for name in ("control_socket_disable", "http_protocols", "dirty_workers"):
        assert any(f"gunicorn setting {name!r} has no meaning" in w for w in loaded.warnings)
    assert any("gunicorn hook 'dirty_post_fork' is not supported" in w for w in loaded.warnings)
    assert not any("'ssl_context'" in w for w in loaded.warnings)  # (a hook prefork calls)
    assert loaded.config.hooks.ssl_context is not None
    for value, on in [("'v1'", True), ("'v2'", True), ("'auto'", True), ("'off'", False)]:
        conf = write(tmp_path, f"proxy_protocol = {value}\n")
        assert loader.load({"config": conf}).config.proxy_protocol is on
    assert not loader.load(
        {"config": write(tmp_path, "proxy_protocol = None\n")}
    ).config.proxy_protocol
    with pytest.raises(ConfigError, match="proxy_protocol|proxy-protocol"):
        loader.load({"config": write(tmp_path, "proxy_protocol = 'v3'\n")})


def test_gunicorns_unlimited_request_line_and_fields(tmp_path: Path) -> None:
    """gunicorn's limit_request_line = 0 (and limit_request_fields = 0) is
    "unlimited": it was refused ("must be at least 1 byte"). It is the widest
    the head's bound allows, with a note; prefork's own names keep refusing 0."""
    conf = write(tmp_path, "limit_request_line = 0\nlimit_request_fields = 0\n")
    loaded = loader.load({"config": conf})
    assert (loaded.config.max_request_line, loaded.config.max_headers) == (65536, 16384)
    assert (
        "limit_request_line = 0 (gunicorn: unlimited): max_request_line = 65536, as far as "
        "--max-header-size (65536 bytes) allows" in loaded.warnings
    )
    loaded = loader.load({"config": conf}, {"PREFORK_MAX_HEADER_SIZE": "128K"})
    assert loaded.config.max_request_line == 131072
    assert loader.load({"config": conf, "max_request_line": "100"}).config.max_request_line == 100
    with pytest.raises(ConfigError, match="must be at least 1 byte"):
        loader.load({"config": write(tmp_path, "max_request_line = 0\n")})
    with pytest.raises(ConfigError, match="max-headers"):
        loader.load({"max_headers": "0"})


def test_proxy_allow_ips_never_silently_replaces_forwarded_allow_ips(tmp_path: Path) -> None:
    """Both gunicorn names were one prefork setting: the later line won,
    silently. gunicorn's proxy_allow_ips is for the PROXY protocol only."""

    def load(text: str, **cli: str) -> loader.Loaded:
        return loader.load({"config": write(tmp_path, text), **cli})

    both = "forwarded_allow_ips = '10.0.0.1'\nproxy_allow_ips = '10.0.0.2'\n"
    loaded = load(both)  # (PROXY protocol off: the PROXY list means nothing)
    assert loaded.config.forwarded_allow_ips == "10.0.0.1"
    assert any("proxy_allow_ips (gunicorn's list" in w and "off" in w for w in loaded.warnings)
    loaded = load(both + "proxy_protocol = True\n")
    assert loaded.config.forwarded_allow_ips == "10.0.0.2"
    assert (
        "proxy_allow_ips (10.0.0.2) and forwarded_allow_ips (10.0.0.1) differ: prefork trusts "
        "one list for the PROXY protocol and X-Forwarded-*; using proxy_allow_ips"
        in loaded.warnings
    )
    loaded = load(both + "proxy_protocol = 'v2'\n", forwarded_allow_ips="10.0.0.3")
    assert loaded.config.forwarded_allow_ips == "10.0.0.3"
    assert any("using forwarded_allow_ips" in w for w in loaded.warnings)
    loaded = load("proxy_allow_ips = ['10.0.0.2']\nproxy_protocol = True\n")
    assert loaded.config.forwarded_allow_ips == "10.0.0.2"
    assert not any("proxy_allow_ips" in w for w in loaded.warnings)


def test_gunicorns_sync_worker_is_one_thread_and_its_timeout_is_explained(
    tmp_path: Path,
) -> None:
    """worker_class = "sync" quietly became 4 threads per worker (an
    application that is not thread-safe ran concurrently); and gunicorn's sync
    timeout ended a stuck request, which prefork's --timeout does not."""

    def load(text: str, name: str = "conf.py", **cli: str) -> loader.Loaded:
        return loader.load({"config": write(tmp_path, text, name), **cli})

    assert load("worker_class = 'sync'\n").config.threads == 1
    assert load("worker_class = 'sync'\n", threads="8").config.threads == 8
    assert load("worker_class = 'sync'\nthreads = 3\n").config.threads == 3  # (gthread)
    assert load("worker_class = 'gthread'\n").config.threads == 4
    assert load("worker_class = 'uvicorn.workers.UvicornWorker'\n").config.threads == 4
    assert load("workers = 2\n").config.threads == 4  # (a prefork file)

    def noted(loaded: loader.Loaded) -> bool:
        return any("set request_timeout" in w for w in loaded.warnings)

    assert noted(load("timeout = 3\n", "gunicorn.conf.py"))
    assert noted(load("timeout = 3\nloglevel = 'info'\n"))
    assert noted(load("timeout = 3\nworker_class = 'sync'\n"))
    assert not noted(load("timeout = 3\nworker_class = 'gthread'\n"))
    assert not noted(load("timeout = 3\n"))  # (prefork's own file: prefork's timeout)
    assert not noted(load("timeout = 3\nrequest_timeout = 3\n", "gunicorn.conf.py"))
    assert not noted(load("timeout = 3\nworker_class = 'uvicorn.workers.UvicornWorker'\n"))


def test_a_umask_gives_the_unix_socket_mode_gunicorn_gives(tmp_path: Path) -> None:
    """gunicorn binds unix sockets under its umask (umask = 0o007:
    srwxrwx---); prefork kept 0600, refusing nginx in the group."""
    assert loader.load({"config": write(tmp_path, "umask = 0o007\n")}).config.unix_socket_mode == (
        0o770
    )
    assert loader.load({"umask": "027"}).config.unix_socket_mode == 0o750
    given = loader.load({"config": write(tmp_path, "umask = 0o007\nunix_socket_mode = 0o600\n")})
    assert given.config.unix_socket_mode == 0o600
    assert loader.load({"umask": "007", "unix_socket_mode": "660"}).config.unix_socket_mode == 0o660
    assert loader.load({}).config.unix_socket_mode == 0o600


def test_gunicorns_and_uvicorns_forwarded_allow_ips_variable_is_named() -> None:
    """Read by gunicorn and uvicorn, it was ignored without a word: the
    proxy's clients all showed as the proxy."""
    warnings = loader.load({}, {"FORWARDED_ALLOW_IPS": "*"}).warnings
    assert warnings == (
        "FORWARDED_ALLOW_IPS (gunicorn's and uvicorn's) is not read: use "
        "PREFORK_FORWARDED_ALLOW_IPS (with --xheaders or --proxy-protocol)",
    )
    both = {"FORWARDED_ALLOW_IPS": "*", "PREFORK_FORWARDED_ALLOW_IPS": "*", "PREFORK_XHEADERS": "1"}
    assert loader.load({}, both).warnings == ()


def test_a_gunicorn_conf_py_in_the_working_directory_is_named_not_read(tmp_path: Path) -> None:
    """gunicorn reads ./gunicorn.conf.py when no -c is given; prefork does not,
    and said nothing: its settings were silently not applied."""
    write(tmp_path, "workers = 7\n", "gunicorn.conf.py")
    loaded = loader.load({}, {}, base=str(tmp_path))
    assert loaded.config.workers == 0
    assert loaded.warnings == (
        "./gunicorn.conf.py is not read: pass -c gunicorn.conf.py to use it",
    )
    conf = write(tmp_path, "workers = 2\n")
    assert loader.load({"config": conf}, {}, base=str(tmp_path)).warnings == ()


def test_a_uvicorn_worker_class_in_a_gunicorn_file_is_the_asgi_interface(tmp_path: Path) -> None:
    """worker_class = "uvicorn.workers.UvicornWorker" (the usual FastAPI
    gunicorn.conf.py) was 'ignored': --interface asgi says what it meant."""
    loaded = loader.load(
        {"config": write(tmp_path, 'worker_class = "uvicorn.workers.UvicornWorker"\n')}
    )
    assert loaded.config.interface == "asgi"
    assert any("interface = 'asgi'" in w for w in loaded.warnings), loaded.warnings


def test_gunicorn_ciphers_are_a_setting_checked_by_openssl(tmp_path: Path) -> None:
    """gunicorn's ``ciphers`` was ignored with a warning: a file meant to
    restrict TLS 1.2's ciphers served every default one.  Now it is
    ``--ciphers``, and a list OpenSSL selects nothing from is a config error."""
    pem = write(tmp_path, "x", "cert.pem")
    conf = write(tmp_path, f"certfile = {pem!r}\nciphers = 'ECDHE+AESGCM'\n")
    loaded = loader.load({"config": conf}, {})
    assert loaded.config.ciphers == "ECDHE+AESGCM"
    assert not [w for w in loaded.warnings if "ciphers" in w]
    assert make_config(ciphers="").ciphers is None
    with pytest.raises(ConfigError, match="^--ciphers: OpenSSL selects no cipher from 'NOPE'"):
        make_config(ciphers="NOPE")


def test_gunicorn_reload_extra_files_is_a_setting(tmp_path: Path, monkeypatch) -> None:
    """gunicorn's ``reload_extra_files`` was ignored with a warning (its files
    never rolled the workers); now relative names are taken from where
    prefork starts, as every path, and a file in a directory that does not
    exist is refused."""
    monkeypatch.chdir(tmp_path)
    conf = write(tmp_path, "reload_extra_files = ['templates/base.html', '.env']\n")
    (tmp_path / "templates").mkdir()
    loaded = loader.load({"config": conf}, {})
    assert loaded.config.reload_extra_files == (
        str(tmp_path / "templates" / "base.html"),
        str(tmp_path / ".env"),
    )
    assert not [w for w in loaded.warnings if "reload_extra_files" in w]
    with pytest.raises(ConfigError, match="^--reload-extra-files: "):
        make_config(reload_extra_files=[str(tmp_path / "nowhere" / "x.toml")])


def test_ignored_gunicorn_settings_with_a_counterpart_say_what_does_it(tmp_path: Path) -> None:
    """``secure_scheme_headers`` was "has no meaning for prefork", which sent
    users looking for a way to trust X-Forwarded-Proto that is on already."""
    conf = write(
        tmp_path,
        "secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}\nworker_tmp_dir = '/dev/shm'\n",
    )
    warnings = loader.load({"config": conf}, {}).warnings
    assert any(
        "'secure_scheme_headers' is prefork's --proxy-headers (on by default" in w
        and w.endswith(": ignored")
        for w in warnings
    ), warnings
    assert any(
        "'worker_tmp_dir' is not needed: the heartbeat is in shared memory" in w for w in warnings
    )
