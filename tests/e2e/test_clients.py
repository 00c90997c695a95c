"""Real clients against the seed's example, ``examples/hello.py``, in one process.

``hello.py`` is the seed's example with only the import line changed; it is
run unmodified (``--port``/``--address``) on loopback, IPv4 and IPv6.  curl
checks HTTP/1.0 and 1.1 with and without keep-alive, requests checks a
library client, ab and wrk put a short load on it and must see zero errors.
Each client command runs with a timeout; a missing binary fails its tests
(``.ci/run`` installs them all).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests

HELLO = Path(__file__).resolve().parent.parent.parent / "examples" / "hello.py"
CLIENT_TIMEOUT = 30


def _start_hello(module_spawn, free_port, host: str):
    port = free_port(host)
    return module_spawn(HELLO, "--port", port, "--address", host, ready_port=port, ready_host=host)


@pytest.fixture(scope="module")
def hello_v4(module_spawn, free_port):
    return _start_hello(module_spawn, free_port, "127.0.0.1")


@pytest.fixture(scope="module")
def hello_v6(module_spawn, free_port, ipv6):
    return _start_hello(module_spawn, free_port, ipv6)


@pytest.fixture(params=["ipv4", "ipv6"])
def hello_url(request):
    """Base URL of a running hello.py, on each address family."""
    if request.param == "ipv4":
        server = request.getfixturevalue("hello_v4")
        return f"http://127.0.0.1:{server.port}"
    server = request.getfixturevalue("hello_v6")
    return f"http://[::1]:{server.port}"


def run(args: list[str], timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- curl

# (curl option, extra request header, whether the connection must be reused,
#  the Connection header the response must carry or None for "absent")
CURL_CASES = {
    "http1.1-keep-alive": ("--http1.1", None, True, None),
    "http1.1-close": ("--http1.1", "Connection: close", False, "close"),
    "http1.0-keep-alive": ("--http1.0", "Connection: keep-alive", True, "keep-alive"),
    "http1.0-no-keep-alive": ("--http1.0", None, False, "close"),
}


@pytest.mark.parametrize("case", sorted(CURL_CASES))
def test_curl(hello_url, case):
    option, header, reused, connection = CURL_CASES[case]
    args = ["curl", "-sS", "-v", "--max-time", "5", option]
    if header:
        args += ["-H", header]
    args += [f"{hello_url}/first?x=1", f"{hello_url}/second"]
    result = run(args, timeout=15)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You requested /first?x=1\nYou requested /second\n"
    log = result.stderr
    assert log.count("< HTTP/1.1 200 OK") == 2, log
    assert ("Re-using existing connection" in log) is reused, log
    response_connection = re.findall(r"^< Connection: (.*?)\r?$", log, re.MULTILINE | re.I)
    if connection is None:
        assert response_connection == [], log
    else:
        assert response_connection == [connection, connection], log


def test_curl_head(hello_v4):
    result = run(
        ["curl", "-sS", "-I", "--max-time", "5", f"http://127.0.0.1:{hello_v4.port}/h"], timeout=15
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # text mode: CRLF already turned into LF
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Length: 17" in lines  # len("You requested /h\n"); no body with HEAD


# ---------------------------------------------------------------- requests


def test_requests(hello_url):
    response = requests.get(f"{hello_url}/hello?name=x", timeout=5)
    assert response.status_code == 200
    assert response.text == "You requested /hello?name=x\n"
    assert response.headers["Content-Length"] == str(len(response.content))


def test_requests_session_keep_alive_and_close(hello_url):
    with requests.Session() as session:
        for i in range(5):
            response = session.get(f"{hello_url}/n{i}", timeout=5)
            assert response.text == f"You requested /n{i}\n"
        closing = session.get(f"{hello_url}/last", headers={"Connection": "close"}, timeout=5)
        assert closing.headers["Connection"] == "close"
        assert closing.text == "You requested /last\n"
        # the pool opens a new connection after the close
        assert session.get(f"{hello_url}/again", timeout=5).text == "You requested /again\n"


# ---------------------------------------------------------------- load: ab and wrk


def _ab_field(output: str, name: str) -> int:
    match = re.search(rf"^{re.escape(name)}:\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {name!r} in ab's output:\n{output}"
    return int(match.group(1))


def test_ab_keep_alive(hello_v4):
    result = run(["ab", "-k", "-n", "2000", "-c", "10", f"http://127.0.0.1:{hello_v4.port}/"])
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert _ab_field(output, "Complete requests") == 2000
    assert _ab_field(output, "Failed requests") == 0
    assert _ab_field(output, "Keep-Alive requests") == 2000
    assert "Non-2xx responses" not in output, output


def test_ab_keep_alive_ipv6(hello_v6):
    result = run(["ab", "-k", "-n", "500", "-c", "5", f"http://[::1]:{hello_v6.port}/"])
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert _ab_field(output, "Failed requests") == 0
    assert _ab_field(output, "Keep-Alive requests") == 500


def test_ab_without_keep_alive(hello_v4):
    result = run(["ab", "-n", "1000", "-c", "10", f"http://127.0.0.1:{hello_v4.port}/"])
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert _ab_field(output, "Complete requests") == 1000
    assert _ab_field(output, "Failed requests") == 0
    assert "Keep-Alive requests" not in output or _ab_field(output, "Keep-Alive requests") == 0
    assert "Non-2xx responses" not in output, output


def test_wrk_keep_alive(hello_v4):
    result = run(
        [
            "wrk",
            "-t1",
            "-c20",
            "-d2s",
            "--timeout",
            "2s",
            f"http://127.0.0.1:{hello_v4.port}/",
        ]
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    match = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    assert match, output
    assert int(match.group(1)) > 100, output
    # wrk prints these lines only when something went wrong.
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    assert errors is None or all(int(n) == 0 for n in errors.groups()), output
    assert "Non-2xx or 3xx responses" not in output, output
