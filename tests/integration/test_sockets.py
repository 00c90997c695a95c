"""Listening sockets for real: TCP on loopback, unix sockets, fd://, systemd and re-exec hand-over.

Every socket a test opens is closed by the test; every process it starts is
killed (if still running) and reaped with a bounded wait.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import prefork.sockets as sockets_mod
from prefork.sockets import (
    DEFAULT_BACKLOG,
    INHERIT_ENV,
    bind_sockets,
    bind_unix_socket,
    describe_socket,
    export_for_exec,
    listeners_from_specs,
    sockets_from_environment,
    systemd_listen_fds,
    systemd_listen_fds_with_names,
    unlink_unix_sockets,
)

REPO_ROOT = str(Path(sockets_mod.__file__).resolve().parent.parent)
TIMEOUT = 10.0


# ---------------------------------------------------------------- helpers


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1) here")


def accept_one(server: socket.socket, timeout: float = TIMEOUT) -> socket.socket:
    readable, _, _ = select.select([server], [], [], timeout)
    assert readable, f"no connection arrived on {describe_socket(server)}"
    conn, _ = server.accept()
    conn.settimeout(timeout)
    return conn


def loopback_address(server: socket.socket) -> tuple[object, ...] | str | bytes:
    """Where a client reaches ``server``: its own address, with wildcards mapped to loopback."""
    name = server.getsockname()
    if server.family == socket.AF_INET:
        return ("127.0.0.1" if name[0] == "0.0.0.0" else name[0], name[1])
    if server.family == socket.AF_INET6:
        return ("::1" if name[0] == "::" else name[0], name[1])
    return name


def round_trip(server: socket.socket) -> None:
    """A real client connects to ``server``, which answers; assert the bytes arrive."""
    with socket.socket(server.family, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(loopback_address(server))
        conn = accept_one(server)
        with conn:
            conn.sendall(b"pong")
            assert client.recv(16) == b"pong"


def connect(address: tuple[object, ...] | str, family: int) -> socket.socket:
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(TIMEOUT)
    try:
        client.connect(address)
    except BaseException:
        client.close()
        raise
    return client


def recv_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


@pytest.fixture
def to_close() -> Iterator[list[socket.socket]]:
    """Sockets registered here are closed at the end of the test."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory for unix sockets (sun_path is limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pf-sock-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dual_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make "localhost" resolve to 127.0.0.1 and ::1 (as on most hosts; not this one).

    The results come from the real resolver for the two literals, shuffled
    and duplicated, so sorting and de-duplication are exercised too.
    """
    real = socket.getaddrinfo

    def fake(host, port, family=0, socktype=0, proto=0, flags=0):
        if host == "localhost":
            v6 = (
                real("::1", port, family, socktype, proto, flags)
                if family != socket.AF_INET
                else []
            )
            v4 = real("127.0.0.1", port, family, socktype, proto, flags)
            return v6 + v4 + v6
        return real(host, port, family, socktype, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=TIMEOUT)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env.pop(INHERIT_ENV, None)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def assert_common_tcp_options(sock: socket.socket) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert sock.getblocking() is False
    assert sock.get_inheritable() is False
    if sock.family == socket.AF_INET6:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


# ---------------------------------------------------------------- bind_sockets


@needs_ipv6
def test_bind_all_interfaces_port0_one_socket_per_family_same_port(
    to_close: list[socket.socket],
) -> None:
    socks = bind_sockets(0, None)
    to_close += socks
    assert [s.family for s in socks] == [socket.AF_INET, socket.AF_INET6]
    assert [s.getsockname()[0] for s in socks] == ["0.0.0.0", "::"]
    assert len({s.getsockname()[1] for s in socks}) == 1
    for s in socks:
        assert_common_tcp_options(s)
        round_trip(s)


def test_empty_address_means_all_interfaces(to_close: list[socket.socket]) -> None:
    socks = bind_sockets(0, "", family=socket.AF_INET)
    to_close += socks
    assert [s.getsockname()[0] for s in socks] == ["0.0.0.0"]
    round_trip(socks[0])


def test_bind_localhost_binds_every_resolved_family(to_close: list[socket.socket]) -> None:
    expected = sorted(
        {
            info[0]
            for info in socket.getaddrinfo(
                "localhost", 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
            )
        }
    )
    socks = bind_sockets(0, "localhost")
    to_close += socks
    assert [s.family for s in socks] == expected
    assert len({s.getsockname()[1] for s in socks}) == 1
    for s in socks:
        assert_common_tcp_options(s)
        round_trip(s)


@needs_ipv6
def test_bind_dual_stack_localhost_sorted_deduplicated_same_port(
    dual_localhost: None, to_close: list[socket.socket]
) -> None:
    socks = bind_sockets(0, "localhost")
    to_close += socks
    assert [(s.family, s.getsockname()[0]) for s in socks] == [
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET6, "::1"),
    ]
    assert socks[0].getsockname()[1] == socks[1].getsockname()[1] != 0
    for s in socks:
        assert_common_tcp_options(s)
        round_trip(s)


def test_family_inet_only(to_close: list[socket.socket]) -> None:
    socks = bind_sockets(0, None, family=socket.AF_INET)
    to_close += socks
    assert [s.family for s in socks] == [socket.AF_INET]
    round_trip(socks[0])


@needs_ipv6
def test_family_inet6_only(to_close: list[socket.socket]) -> None:
    socks = bind_sockets(0, "::1", family=socket.AF_INET6)
    to_close += socks
    assert [(s.family, s.getsockname()[0]) for s in socks] == [(socket.AF_INET6, "::1")]
    assert_common_tcp_options(socks[0])
    round_trip(socks[0])


def test_fixed_port_and_backlog_argument(to_close: list[socket.socket]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    socks = bind_sockets(port, "127.0.0.1", backlog=16)
    to_close += socks
    assert [s.getsockname() for s in socks] == [("127.0.0.1", port)]
    assert DEFAULT_BACKLOG == 2048
    round_trip(socks[0])


def test_port_in_use_raises_and_leaks_nothing(to_close: list[socket.socket]) -> None:
    busy = socket.socket()
    to_close.append(busy)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    before = fd_count()
    with pytest.raises(OSError) as info:
        bind_sockets(port, "127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}" in str(info.value)
    assert fd_count() == before


@needs_ipv6
def test_partial_failure_closes_the_sockets_already_made(
    dual_localhost: None, to_close: list[socket.socket]
) -> None:
    # Take a port on ::1 only; 127.0.0.1 binds first, then ::1 fails.
    while True:
        busy = socket.socket(socket.AF_INET6)
        busy.bind(("::1", 0))
        port = busy.getsockname()[1]
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
            break
        except OSError:
            busy.close()
    to_close.append(busy)
    busy.listen()
    before = fd_count()
    with pytest.raises(OSError) as info:
        bind_sockets(port, "localhost")
    assert info.value.errno == errno.EADDRINUSE
    assert f"[::1]:{port}" in str(info.value)
    assert fd_count() == before
    # The IPv4 socket made before the failure is really gone: the port is free again.
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


@needs_ipv6
def test_port0_retries_when_the_port_is_taken_on_the_other_family(
    dual_localhost: None, monkeypatch: pytest.MonkeyPatch, to_close: list[socket.socket]
) -> None:
    real_bind = sockets_mod._bind
    blocked: list[int] = []

    def bind_with_conflict(sock: socket.socket, sockaddr: tuple[object, ...]) -> None:
        if sock.family == socket.AF_INET6 and not blocked:
            # Someone else takes the IPv4 socket's port on ::1 just before we get there.
            blocker = socket.socket(socket.AF_INET6)
            to_close.append(blocker)
            blocker.bind(("::1", sockaddr[1]))
            blocker.listen()
            blocked.append(int(sockaddr[1]))  # type: ignore[call-overload]
        real_bind(sock, sockaddr)

    monkeypatch.setattr(sockets_mod, "_bind", bind_with_conflict)
    before = fd_count()
    socks = bind_sockets(0, "localhost")
    to_close += socks
    assert len(blocked) == 1
    ports = {s.getsockname()[1] for s in socks}
    assert len(ports) == 1
    assert blocked[0] not in ports
    assert [s.family for s in socks] == [socket.AF_INET, socket.AF_INET6]
    assert fd_count() == before + 1 + len(socks)  # the blocker and the result, nothing else
    for s in socks:
        round_trip(s)


@needs_ipv6
def test_port0_retry_gives_up(dual_localhost: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_bind = sockets_mod._bind
    attempts: list[int] = []

    def always_taken(sock: socket.socket, sockaddr: tuple[object, ...]) -> None:
        if sock.family == socket.AF_INET6:
            attempts.append(1)
            raise OSError(errno.EADDRINUSE, "Address already in use")
        real_bind(sock, sockaddr)

    monkeypatch.setattr(sockets_mod, "_bind", always_taken)
    before = fd_count()
    with pytest.raises(OSError) as info:
        bind_sockets(0, "localhost")
    assert info.value.errno == errno.EADDRINUSE
    assert len(attempts) == 10
    assert fd_count() == before


@needs_ipv6
def test_eaddrnotavail_on_localhost_ipv6_is_skipped(
    dual_localhost: None, monkeypatch: pytest.MonkeyPatch, to_close: list[socket.socket]
) -> None:
    real_bind = sockets_mod._bind

    def half_disabled_ipv6(sock: socket.socket, sockaddr: tuple[object, ...]) -> None:
        if sock.family == socket.AF_INET6:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        real_bind(sock, sockaddr)

    monkeypatch.setattr(sockets_mod, "_bind", half_disabled_ipv6)
    before = fd_count()
    socks = bind_sockets(0, "localhost")
    to_close += socks
    assert [s.family for s in socks] == [socket.AF_INET]
    assert fd_count() == before + 1
    round_trip(socks[0])
    # For an explicit IPv6 address the same error is real and raised.
    with pytest.raises(OSError) as info:
        bind_sockets(0, "::1")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert fd_count() == before + 1


@needs_ipv6
def test_unsupported_family_is_skipped(
    monkeypatch: pytest.MonkeyPatch, to_close: list[socket.socket]
) -> None:
    real_socket = socket.socket

    class NoIPv6(real_socket):  # type: ignore[misc, valid-type]
        def __init__(self, family: int = -1, *args: object, **kwargs: object) -> None:
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", NoIPv6)
    socks = bind_sockets(0, None)
    monkeypatch.undo()
    to_close += socks
    assert [s.family for s in socks] == [socket.AF_INET]
    round_trip(socks[0])


def test_reuse_port_two_sockets_on_one_port(to_close: list[socket.socket]) -> None:
    first = bind_sockets(0, "127.0.0.1", reuse_port=True)
    to_close += first
    port = first[0].getsockname()[1]
    second = bind_sockets(port, "127.0.0.1", reuse_port=True)
    to_close += second
    assert second[0].getsockname() == ("127.0.0.1", port)
    for s in first + second:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    # Without reuse_port the same bind is refused.
    with pytest.raises(OSError) as info:
        bind_sockets(port, "127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE
    # A client reaches one of the two.
    with connect(("127.0.0.1", port), socket.AF_INET) as client:
        readable, _, _ = select.select([first[0], second[0]], [], [], TIMEOUT)
        assert readable
        conn, _ = readable[0].accept()
        with conn:
            conn.sendall(b"x")
            assert client.recv(1) == b"x"


def test_reuse_port_without_so_reuseport_is_a_value_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ValueError, match="reuse_port"):
        bind_sockets(0, "127.0.0.1", reuse_port=True)


def test_reuse_port_off_by_default(to_close: list[socket.socket]) -> None:
    socks = bind_sockets(0, "127.0.0.1")
    to_close += socks
    assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


# ---------------------------------------------------------------- bind_unix_socket


def test_unix_socket_default_mode(sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "a.sock")
    umask_before = os.umask(0o022)
    os.umask(umask_before)
    sock = bind_unix_socket(path)
    to_close.append(sock)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert os.umask(umask_before) == umask_before  # restored
    assert sock.getblocking() is False
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert describe_socket(sock) == f"unix:{path}"
    round_trip(sock)


@pytest.mark.parametrize("mode", [0o660, 0o666, 0o640])
def test_unix_socket_custom_mode(mode: int, sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "m.sock")
    old = os.umask(0o077)  # a strict process umask must not narrow the requested mode
    try:
        sock = bind_unix_socket(path, mode=mode)
    finally:
        os.umask(old)
    to_close.append(sock)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_unix_socket_is_never_more_permissive_than_mode(
    sockdir: str, monkeypatch: pytest.MonkeyPatch, to_close: list[socket.socket]
) -> None:
    # With chmod disabled, the mode comes from the umask used at bind time alone:
    # there is no window in which the file is 0o777 & ~process_umask.
    path = os.path.join(sockdir, "u.sock")
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    old = os.umask(0)
    try:
        sock = bind_unix_socket(path, mode=0o640)
    finally:
        os.umask(old)
    to_close.append(sock)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_unix_socket_owner(sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "o.sock")
    if os.geteuid() == 0:
        owner = (65534, 65534)
    else:
        owner = (os.getuid(), os.getgid())
    sock = bind_unix_socket(path, owner=owner)
    to_close.append(sock)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == owner


def test_unix_socket_failure_after_bind_removes_the_file(
    sockdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.path.join(sockdir, "f.sock")

    def refuse(*args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    before = fd_count()
    with pytest.raises(PermissionError):
        bind_unix_socket(path, owner=(1, 1))
    assert not os.path.exists(path)
    assert fd_count() == before


def test_unix_stale_socket_is_replaced(sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # a server that died without unlinking its socket
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    sock = bind_unix_socket(path)
    to_close.append(sock)
    round_trip(sock)


def test_unix_live_socket_is_refused(sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "live.sock")
    live = socket.socket(socket.AF_UNIX)
    to_close.append(live)
    live.bind(path)
    live.listen()
    inode = os.stat(path).st_ino
    before = fd_count()
    with pytest.raises(OSError) as info:
        bind_unix_socket(path)
    assert "already in use by a running server" in str(info.value)
    assert path in str(info.value)
    assert fd_count() == before
    assert os.stat(path).st_ino == inode
    # The running server still gets its connections (drain the liveness probe first).
    accept_one(live).close()
    round_trip(live)


def test_unix_live_socket_with_full_backlog_is_refused(
    sockdir: str, to_close: list[socket.socket]
) -> None:
    path = os.path.join(sockdir, "full.sock")
    live = socket.socket(socket.AF_UNIX)
    to_close.append(live)
    live.bind(path)
    live.listen(0)
    for _ in range(64):  # fill the backlog until connect would block
        client = socket.socket(socket.AF_UNIX)
        to_close.append(client)
        client.setblocking(False)
        if client.connect_ex(path) in (errno.EAGAIN, errno.EWOULDBLOCK):
            break
    else:
        raise AssertionError("64 connections did not fill a unix socket backlog of 0")
    with pytest.raises(OSError, match="already in use by a running server"):
        bind_unix_socket(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_unix_regular_file_is_refused_and_kept(sockdir: str) -> None:
    path = os.path.join(sockdir, "data.txt")
    Path(path).write_text("keep me")
    before = fd_count()
    with pytest.raises(ValueError) as info:
        bind_unix_socket(path)
    assert "exists and is not a socket" in str(info.value)
    assert path in str(info.value)
    assert Path(path).read_text() == "keep me"
    assert fd_count() == before


def test_unix_directory_is_refused(sockdir: str) -> None:
    with pytest.raises(ValueError, match="exists and is not a socket"):
        bind_unix_socket(sockdir)
    assert os.path.isdir(sockdir)


@pytest.mark.parametrize("prefix", ["@", "\0"])
def test_unix_abstract_socket(
    prefix: str, to_close: list[socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"prefork-test-{uuid.uuid4().hex}"
    sock = bind_unix_socket(prefix + name, mode=0o600)
    to_close.append(sock)
    assert sock.getsockname() == b"\0" + name.encode()
    assert describe_socket(sock) == f"unix:@{name}"
    assert sock.getblocking() is False
    assert os.listdir(tmp_path) == []  # no file anywhere
    round_trip(sock)
    # The abstract name is taken now.
    with pytest.raises(OSError) as info:
        bind_unix_socket("@" + name)
    assert info.value.errno == errno.EADDRINUSE
    assert f"@{name}" in str(info.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [("", "empty"), ("@", "empty"), ("/tmp/" + "x" * 120, "too long")],
)
def test_unix_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bind_unix_socket(path)


# ---------------------------------------------------------------- listeners_from_specs


@needs_ipv6
def test_listeners_from_specs_every_kind(
    sockdir: str, monkeypatch: pytest.MonkeyPatch, to_close: list[socket.socket]
) -> None:
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen(7)
    inherited_name = inherited.getsockname()
    fd = inherited.detach()  # now owned by whatever adopts fd://N
    assert os.get_blocking(fd)  # still blocking, as a parent would pass it

    listened: list[int] = []
    real_listen = socket.socket.listen

    def spy_listen(self: socket.socket, *args: int) -> None:
        listened.append(self.fileno())
        real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "listen", spy_listen)
    path = os.path.join(sockdir, "web.sock")
    try:
        socks = listeners_from_specs(
            ["127.0.0.1:0", "[::1]:0", f"unix:{path}", f"fd://{fd}"], unix_mode=0o660
        )
    except BaseException:
        os.close(fd)
        raise
    to_close += socks
    monkeypatch.undo()

    assert [s.family for s in socks] == [
        socket.AF_INET,
        socket.AF_INET6,
        socket.AF_UNIX,
        socket.AF_INET,
    ]
    v4, v6, unix, adopted = socks
    assert describe_socket(v4) == f"http://127.0.0.1:{v4.getsockname()[1]}"
    assert describe_socket(v6) == f"http://[::1]:{v6.getsockname()[1]}"
    assert describe_socket(unix) == f"unix:{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert adopted.fileno() == fd
    assert adopted.getsockname() == inherited_name
    assert fd not in listened  # listen() is not called again on an inherited socket
    assert len(listened) == 3
    assert adopted.getblocking() is False
    assert adopted.get_inheritable() is False
    for s in socks:
        assert s.getblocking() is False
        round_trip(s)


def test_listeners_from_specs_bad_syntax_binds_nothing(sockdir: str) -> None:
    path = os.path.join(sockdir, "never.sock")
    before = fd_count()
    with pytest.raises(ValueError, match=r"^bind 'foo:bar': port must be a number 0-65535$"):
        listeners_from_specs([f"unix:{path}", "127.0.0.1:0", "foo:bar"])
    assert fd_count() == before
    assert not os.path.exists(path)


def test_listeners_from_specs_failure_closes_what_was_opened(
    sockdir: str, to_close: list[socket.socket]
) -> None:
    busy = socket.socket()
    to_close.append(busy)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    spec = f"127.0.0.1:{busy.getsockname()[1]}"
    path = os.path.join(sockdir, "first.sock")
    before = fd_count()
    with pytest.raises(OSError) as info:
        listeners_from_specs([f"unix:{path}", "127.0.0.1:0", spec])
    assert info.value.errno == errno.EADDRINUSE
    assert f"bind {spec!r}" in str(info.value)
    assert fd_count() == before
    assert not os.path.exists(path)  # the unix socket made by this call is removed


def test_listeners_from_specs_unix_errors_name_the_spec(sockdir: str) -> None:
    path = os.path.join(sockdir, "plain")
    Path(path).write_text("x")
    with pytest.raises(ValueError, match=rf"^bind 'unix:{path}': .*exists and is not a socket"):
        listeners_from_specs([f"unix:{path}"])
    assert Path(path).read_text() == "x"


def test_listeners_from_specs_same_fd_twice_is_refused(to_close: list[socket.socket]) -> None:
    inherited = socket.socket()
    to_close.append(inherited)
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    fd = inherited.fileno()
    with pytest.raises(ValueError, match=rf"^bind 'fd://{fd}': fd {fd} is given more than once$"):
        listeners_from_specs([f"fd://{fd}", f"fd://{fd}"])
    round_trip(inherited)


def test_listeners_from_specs_fd_not_open() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        listeners_from_specs([f"fd://{fd}"])
    assert info.value.errno == errno.EBADF
    assert f"bind 'fd://{fd}'" in str(info.value)
    assert "not open" in str(info.value)


def test_listeners_from_specs_fd_rejections_leave_the_fd_alone(tmp_path: Path) -> None:
    regular = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    unlistened = socket.socket()
    unlistened.bind(("127.0.0.1", 0))
    datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagram.bind(("127.0.0.1", 0))
    try:
        cases = [
            (regular, "is not a socket"),
            (unlistened.fileno(), "is not a listening socket"),
            (datagram.fileno(), "is not a stream socket"),
        ]
        for fd, message in cases:
            with pytest.raises(ValueError) as info:
                listeners_from_specs([f"fd://{fd}"])
            assert str(info.value).startswith(f"bind 'fd://{fd}': fd {fd} ")
            assert message in str(info.value)
            os.fstat(fd)  # still open
        assert unlistened.getblocking() is True  # untouched
    finally:
        os.close(regular)
        unlistened.close()
        datagram.close()


def test_listeners_from_specs_failure_after_fd_keeps_the_inherited_fd(
    to_close: list[socket.socket],
) -> None:
    inherited = socket.socket()
    to_close.append(inherited)
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    busy = socket.socket()
    to_close.append(busy)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with pytest.raises(OSError, match="bind '127.0.0.1:"):
        listeners_from_specs([f"fd://{inherited.fileno()}", f"127.0.0.1:{busy.getsockname()[1]}"])
    # Not closed behind the owner's back, flags as they were: it still accepts.
    assert os.get_blocking(inherited.fileno()) is True
    assert os.get_inheritable(inherited.fileno()) is False
    round_trip(inherited)


def test_listeners_from_specs_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(OSError) as info:
        listeners_from_specs(["nohost.invalid:80"])
    # The one-line message is strerror; str() adds Python's "[Errno N] " prefix.
    assert info.value.strerror == (
        "bind 'nohost.invalid:80': cannot resolve host 'nohost.invalid': Name or service not known"
    )
    assert info.value.errno == socket.EAI_NONAME


def test_listeners_from_specs_reuse_port_and_backlog(to_close: list[socket.socket]) -> None:
    socks = listeners_from_specs(["127.0.0.1:0"], backlog=64, reuse_port=True)
    to_close += socks
    assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    more = listeners_from_specs([f"127.0.0.1:{socks[0].getsockname()[1]}"], reuse_port=True)
    to_close += more
    assert more[0].getsockname() == socks[0].getsockname()


# ---------------------------------------------------------------- systemd socket activation

SYSTEMD_CHILD = r"""
import json, os, select, sys
from prefork.sockets import systemd_listen_fds_with_names
pairs = systemd_listen_fds_with_names()
print(json.dumps({
    "pid": os.getpid(),
    "names": [name for name, _ in pairs],
    "fds": [s.fileno() for _, s in pairs],
    "families": [s.family.name for _, s in pairs],
    "blocking": [os.get_blocking(s.fileno()) for _, s in pairs],
    "inheritable": [s.get_inheritable() for _, s in pairs],
    "env": {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")},
}), flush=True)
for name, s in pairs:
    ready, _, _ = select.select([s], [], [], 10)
    if not ready:
        sys.exit(3)
    conn, _ = s.accept()
    conn.setblocking(True)
    conn.sendall(f"{name} on fd {s.fileno()}".encode())
    conn.close()
"""


def run_child(
    proc: subprocess.Popen[bytes], clients: list[socket.socket]
) -> tuple[dict[str, object], list[bytes]]:
    """Collect each client's reply, then the child's JSON report; always reap it."""
    try:
        replies = [recv_all(c) for c in clients]
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err.decode()
        return json.loads(out.decode().splitlines()[0]), replies
    finally:
        stop(proc)
        for c in clients:
            c.close()


def test_systemd_listen_fds_real_protocol(to_close: list[socket.socket]) -> None:
    server = socket.socket()
    to_close.append(server)
    server.bind(("127.0.0.1", 0))
    server.listen()
    # sh puts the socket (its stdin) at fd 3, sets LISTEN_PID to its own pid and
    # execs Python, which keeps that pid: exactly what systemd does.
    wrapper = (
        'exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$0" -c "$1"'
    )
    proc = subprocess.Popen(
        ["sh", "-c", wrapper, sys.executable, SYSTEMD_CHILD],
        stdin=server.fileno(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    clients: list[socket.socket] = []
    try:
        clients.append(connect(server.getsockname(), socket.AF_INET))
    finally:
        report, replies = run_child(proc, clients)
    assert report["pid"] == proc.pid
    assert report["names"] == ["web"]
    assert report["fds"] == [3]
    assert report["families"] == ["AF_INET"]
    assert report["blocking"] == [False]
    assert report["inheritable"] == [False]
    assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
    assert replies == [b"web on fd 3"]


TWO_FD_WRAPPER = r"""
import fcntl, os, sys
sources = [int(x) for x in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(sources))
if sys.argv[2] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.executable, [sys.executable, "-c", sys.argv[3]])
"""


@pytest.mark.parametrize(
    ("fdnames", "expected"),
    [("web:admin", ["web", "admin"]), ("-", ["unknown", "unknown"]), ("web", ["web", "unknown"])],
)
def test_systemd_listen_fds_two_sockets_with_names(
    fdnames: str, expected: list[str], sockdir: str, to_close: list[socket.socket]
) -> None:
    tcp = bind_sockets(0, "127.0.0.1")[0]
    to_close.append(tcp)
    unix = bind_unix_socket(os.path.join(sockdir, "admin.sock"))
    to_close.append(unix)
    fds = (tcp.fileno(), unix.fileno())
    proc = subprocess.Popen(
        [sys.executable, "-c", TWO_FD_WRAPPER, ",".join(map(str, fds)), fdnames, SYSTEMD_CHILD],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    clients: list[socket.socket] = []
    try:
        clients.append(connect(tcp.getsockname(), socket.AF_INET))
        clients.append(connect(unix.getsockname(), socket.AF_UNIX))
    finally:
        report, replies = run_child(proc, clients)
    assert report["pid"] == proc.pid
    assert report["names"] == expected
    assert report["fds"] == [3, 4]
    assert report["families"] == ["AF_INET", "AF_UNIX"]
    assert report["blocking"] == [False, False]
    assert replies == [f"{expected[0]} on fd 3".encode(), f"{expected[1]} on fd 4".encode()]


def test_systemd_socket_activate(to_close: list[socket.socket]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=web",
            "-E",
            f"PYTHONPATH={REPO_ROOT}",
            sys.executable,
            "-c",
            SYSTEMD_CHILD,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    clients: list[socket.socket] = []
    try:
        # Without -a it execs the service on the first connection, which stays
        # queued and is served by the service; so connect, do not wait for output.
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                clients.append(connect(("127.0.0.1", port), socket.AF_INET))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
    finally:
        report, replies = run_child(proc, clients)
    assert report["pid"] == proc.pid  # exec keeps the pid LISTEN_PID names
    assert report["names"] == ["web"]
    assert report["fds"] == [3]
    assert report["blocking"] == [False]
    assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
    assert replies == [b"web on fd 3"]


def test_systemd_listen_pid_of_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fd_count()
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert systemd_listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"  # kept when asked
    assert systemd_listen_fds() == []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ
    assert fd_count() == before


def test_systemd_no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert systemd_listen_fds_with_names() == []


def test_systemd_zero_fds_and_bad_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert systemd_listen_fds() == []
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "two")
    with pytest.raises(ValueError, match="LISTEN_FDS='two'"):
        systemd_listen_fds()
    assert "LISTEN_PID" not in os.environ


def test_systemd_in_a_forked_child_of_the_activated_process(to_close: list[socket.socket]) -> None:
    # A process that inherited the variables but is not LISTEN_PID gets nothing.
    server = socket.socket()
    to_close.append(server)
    server.bind(("127.0.0.1", 0))
    server.listen()
    code = (
        "import os; from prefork.sockets import systemd_listen_fds; "
        "print(len(systemd_listen_fds()), os.environ.get('LISTEN_FDS'), os.fstat(3).st_mode != 0)"
    )
    wrapper = 'exec 3<&0 0</dev/null; LISTEN_PID=$PPID LISTEN_FDS=1 exec "$0" -c "$1"'
    proc = subprocess.Popen(
        ["sh", "-c", wrapper, sys.executable, code],
        stdin=server.fileno(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc)
    assert proc.returncode == 0, err.decode()
    assert out.split() == [b"0", b"None", b"True"]


# ---------------------------------------------------------------- re-exec hand-over

REEXEC_CHILD = r"""
import json, os, select, sys
from prefork.sockets import INHERIT_ENV, describe_socket, sockets_from_environment
socks = sockets_from_environment()
print(json.dumps({
    "fds": [s.fileno() for s in socks],
    "described": [describe_socket(s) for s in socks],
    "blocking": [os.get_blocking(s.fileno()) for s in socks],
    "env": os.environ.get(INHERIT_ENV),
}), flush=True)
for s in socks:
    ready, _, _ = select.select([s], [], [], 10)
    if not ready:
        sys.exit(3)
    conn, _ = s.accept()
    conn.setblocking(True)
    conn.sendall(describe_socket(s).encode())
    conn.close()
"""


def test_sockets_survive_a_real_exec(sockdir: str, to_close: list[socket.socket]) -> None:
    tcp = bind_sockets(0, "127.0.0.1")[0]
    to_close.append(tcp)
    unix = bind_unix_socket(os.path.join(sockdir, "old-master.sock"))
    to_close.append(unix)
    assert not tcp.get_inheritable()
    value = export_for_exec([tcp, unix])
    assert value == f"{tcp.fileno()},{unix.fileno()}"
    assert tcp.get_inheritable() and unix.get_inheritable()
    # close_fds=False: the fds cross the exec only because export_for_exec made
    # them inheritable, as they must for os.execve in the master.
    proc = subprocess.Popen(
        [sys.executable, "-c", REEXEC_CHILD],
        close_fds=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(**{INHERIT_ENV: value}),
    )
    clients: list[socket.socket] = []
    try:
        clients.append(connect(tcp.getsockname(), socket.AF_INET))
        clients.append(connect(unix.getsockname(), socket.AF_UNIX))
    finally:
        report, replies = run_child(proc, clients)
    described = [describe_socket(tcp), describe_socket(unix)]
    assert report["fds"] == [tcp.fileno(), unix.fileno()]
    assert report["described"] == described
    assert report["blocking"] == [False, False]
    assert report["env"] is None
    assert replies == [d.encode() for d in described]


def test_sockets_from_environment_in_process(to_close: list[socket.socket]) -> None:
    assert sockets_from_environment({}) == []
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.listen()
    name = own.getsockname()
    fd = own.detach()
    environ = {INHERIT_ENV: str(fd), "OTHER": "1"}
    try:
        socks = sockets_from_environment(environ)
    except BaseException:
        os.close(fd)
        raise
    to_close += socks
    assert environ == {"OTHER": "1"}
    assert [(s.fileno(), s.getsockname()) for s in socks] == [(fd, name)]
    assert socks[0].getblocking() is False
    round_trip(socks[0])


def test_sockets_from_environment_rejections(tmp_path: Path) -> None:
    environ = {INHERIT_ENV: "3,x"}
    with pytest.raises(ValueError, match=rf"^{INHERIT_ENV}='3,x'"):
        sockets_from_environment(environ)
    assert environ == {}
    kept = {INHERIT_ENV: "x"}
    with pytest.raises(ValueError):
        sockets_from_environment(kept, unset=False)
    assert kept == {INHERIT_ENV: "x"}
    regular = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    try:
        with pytest.raises(ValueError, match=f"{INHERIT_ENV} fd {regular} is not a socket"):
            sockets_from_environment({INHERIT_ENV: str(regular)})
        os.fstat(regular)  # left open
    finally:
        os.close(regular)


def test_export_for_exec_rejects_a_closed_socket() -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        export_for_exec([s])


# ---------------------------------------------------------------- describe / unlink


def test_describe_socket_closed() -> None:
    s = socket.socket()
    s.close()
    assert describe_socket(s) == "<socket fd=-1>"


def test_unlink_unix_sockets_final_stop(sockdir: str, to_close: list[socket.socket]) -> None:
    path = os.path.join(sockdir, "final.sock")
    unix = bind_unix_socket(path)
    to_close.append(unix)
    abstract = bind_unix_socket(f"@prefork-test-{uuid.uuid4().hex}")
    to_close.append(abstract)
    tcp = bind_sockets(0, "127.0.0.1")[0]
    to_close.append(tcp)
    unlink_unix_sockets([unix, abstract, tcp])
    assert not os.path.exists(path)
    unlink_unix_sockets([unix])  # already gone: no error
    round_trip(abstract)  # untouched
    round_trip(tcp)


def test_unlink_unix_sockets_leaves_a_non_socket_alone(
    sockdir: str, to_close: list[socket.socket]
) -> None:
    path = os.path.join(sockdir, "replaced.sock")
    unix = bind_unix_socket(path)
    to_close.append(unix)
    os.unlink(path)
    Path(path).write_text("someone else's file")
    unlink_unix_sockets([unix])
    assert Path(path).read_text() == "someone else's file"
