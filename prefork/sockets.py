"""Listening sockets: binding, unix sockets, inheriting from systemd or a previous master.

The master binds every listening socket once, before any worker is forked, and
all workers share them: the kernel's accept queue keeps connections safe while
workers come and go. This module is the only place that creates listening
sockets, from any of these sources:

* TCP addresses (``bind_sockets``): one socket per address family, IPv6 with
  ``IPV6_V6ONLY`` so that "dual stack" is always two sockets, one port for
  both families even when the port is chosen by the kernel;
* unix sockets (``bind_unix_socket``): created with the requested mode from
  the first instant, refusing to steal the path from a running server;
* ``fd://N`` specs, systemd socket activation (``systemd_listen_fds``), and
  the sockets a previous master handed over across a re-exec
  (``export_for_exec`` / ``sockets_from_environment``).

Every socket returned is listening and non-blocking, and is not inherited by
``exec`` (``fork`` shares it regardless), so an app's subprocess never keeps a
port open by accident. Standard library only.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Iterable, Sequence

# Parsing of --bind values and inherited sockets live in their own modules;
# their public names are available from here too.
from prefork.bindspec import BindSpec, parse_bind  # noqa: E402
from prefork.inherit import (  # noqa: E402
    INHERIT_ENV,
    adopt_fd,
    export_for_exec,
    sockets_from_environment,
    systemd_listen_fds,
    systemd_listen_fds_with_names,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "INHERIT_ENV",
    "BindSpec",
    "bind_sockets",
    "bind_unix_socket",
    "describe_socket",
    "export_for_exec",
    "listeners_from_specs",
    "parse_bind",
    "sockets_from_environment",
    "systemd_listen_fds",
    "systemd_listen_fds_with_names",
    "unlink_unix_sockets",
]

log = logging.getLogger("prefork.sockets")

#: Listen backlog. The traditional 128 (tornado's default) is low for a
#: pre-fork server: while every worker is busy, or while workers restart during
#: a reload, new connections wait in this queue, and once it is full the kernel
#: drops SYNs and clients see multi-second retransmit stalls. The kernel caps
#: the value at ``net.core.somaxconn`` (4096 on Linux >= 5.4), so asking for
#: more than the host allows is harmless.
DEFAULT_BACKLOG = 2048

# How many times to retry a whole dual-stack bind when the kernel-chosen port
# of the first family is already taken on another family (tornado issue #1860).
_EPHEMERAL_ATTEMPTS = 10

# sun_path is 108 bytes on Linux, including the terminating NUL of a path.
_UNIX_PATH_MAX = 107


# --------------------------------------------------------------------------
# TCP


def _os_error(err_no: int | None, message: str) -> OSError:
    """An OSError carrying ``err_no`` (so callers can test ``e.errno``) and our message."""
    if err_no is None:
        return OSError(message)
    return OSError(err_no, message)


def _format_sockaddr(family: int, sockaddr: tuple[object, ...] | str | bytes) -> str:
    if isinstance(sockaddr, (str, bytes)):
        return repr(sockaddr)
    host, port = sockaddr[0], sockaddr[1]
    if family == socket.AF_INET6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _bind(sock: socket.socket, sockaddr: tuple[object, ...]) -> None:
    """``sock.bind``; a separate function so tests can inject a real conflict."""
    sock.bind(sockaddr)


class _RetryEphemeral(Exception):
    """The kernel-chosen port of the first family is taken on another family."""


def _is_localhost(address: str | None) -> bool:
    return address is not None and address.lower().rstrip(".") == "localhost"


def _bind_set(
    infos: list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]],
    port: int,
    address: str | None,
    backlog: int,
    reuse_port: bool,
) -> list[socket.socket]:
    """Bind one socket per getaddrinfo result; all-or-nothing."""
    sockets: list[socket.socket] = []
    bound_port: int | None = None
    try:
        for family, socktype, proto, _canonname, sockaddr in infos:
            try:
                sock = socket.socket(family, socktype, proto)
            except OSError as e:
                if e.errno == errno.EAFNOSUPPORT:
                    # IPv6 disabled in the kernel (or IPv4 in an IPv6-only
                    # namespace): serve the families that work.
                    log.debug("skipping %s: address family not supported", family.name)
                    continue
                raise
            try:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                except OSError as e:  # pragma: no cover - exotic platforms (GNU Hurd)
                    if e.errno != errno.ENOPROTOOPT:
                        raise
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    # Always one socket per family: "::" must not also take IPv4,
                    # or the IPv4 socket for the same port would fail to bind.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and bound_port is not None:
                    sockaddr = (sockaddr[0], bound_port, *sockaddr[2:])
                sock.setblocking(False)
                try:
                    _bind(sock, sockaddr)
                except OSError as e:
                    where = _format_sockaddr(family, sockaddr)
                    if (
                        e.errno == errno.EADDRNOTAVAIL
                        and family == socket.AF_INET6
                        and _is_localhost(address)
                    ):
                        # "localhost" resolves to ::1 but IPv6 is half disabled
                        # (common in Docker): serve IPv4 only.
                        log.debug("skipping %s: address not available", where)
                        sock.close()
                        continue
                    if e.errno == errno.EADDRINUSE and port == 0 and bound_port is not None:
                        raise _RetryEphemeral(where) from e
                    raise _os_error(e.errno, f"cannot bind {where}: {e.strerror or e}") from e
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            if bound_port is None:
                bound_port = sock.getsockname()[1]
            sockets.append(sock)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def bind_sockets(
    port: int,
    address: str | None = None,
    family: int = socket.AF_UNSPEC,
    backlog: int = DEFAULT_BACKLOG,
    flags: int | None = None,
    reuse_port: bool = False,
) -> list[socket.socket]:
    """Bind listening TCP sockets on every address that ``address`` resolves to.

    Returns one listening, non-blocking socket per getaddrinfo result (sorted
    by family, so IPv4 comes first and the order is stable). ``address`` None
    or ``""`` means all interfaces (``0.0.0.0`` and ``::``); a host name such
    as ``localhost`` means all of its addresses.

    * ``flags`` defaults to ``AI_PASSIVE`` alone. ``AI_ADDRCONFIG`` is never
      added: glibc only counts global IPv6 addresses, so hosts with link-local
      IPv6 would silently lose ``::`` depending on boot timing.
    * ``IPV6_V6ONLY`` is set on every IPv6 socket: dual stack means two
      sockets, never one IPv6 socket that also takes IPv4.
    * Port 0: the port the kernel gave the first socket is reused for the
      other families. If that port is already taken on another family, the
      whole set is closed and bound again (up to 10 times).
    * A family whose sockets cannot be created (``EAFNOSUPPORT``) is skipped,
      and so is ``::1`` for ``localhost`` when IPv6 is half disabled
      (``EADDRNOTAVAIL``). Any other error closes the sockets already made by
      this call and is raised as OSError naming the address.
    * ``reuse_port`` sets ``SO_REUSEPORT`` (a socket per worker, balanced by
      the kernel); ValueError if the platform lacks it. Note its cost: when a
      socket closes, the connections queued on it are reset.
    """
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port is not supported on this platform (no SO_REUSEPORT)")
    if address == "":
        address = None
    if not socket.has_ipv6 and family == socket.AF_UNSPEC:
        # Python built without IPv6: getaddrinfo may still return IPv6 results.
        family = socket.AF_INET
    if flags is None:
        flags = socket.AI_PASSIVE

    infos = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, flags)
    unique: list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]] = []
    seen: set[tuple[int, tuple[object, ...]]] = set()
    for info in sorted(infos, key=lambda i: int(i[0])):
        fam, socktype, proto, canonname, sockaddr = info
        key = (int(fam), tuple(sockaddr))
        if key in seen:
            continue
        seen.add(key)
        unique.append((fam, socktype, proto, canonname, tuple(sockaddr)))

    attempts = _EPHEMERAL_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        try:
            sockets = _bind_set(unique, port, address, backlog, reuse_port)
        except _RetryEphemeral as e:
            log.debug("ephemeral port taken on %s (attempt %d), retrying", e, attempt + 1)
            continue
        if not sockets:
            where = address if address is not None else "all interfaces"
            raise OSError(errno.EADDRNOTAVAIL, f"no usable address to bind for {where}:{port}")
        return sockets
    raise OSError(
        errno.EADDRINUSE,
        f"could not find a free port shared by all address families of "
        f"{address or 'all interfaces'} after {attempts} attempts",
    )


# --------------------------------------------------------------------------
# Unix sockets


def _display_unix(path: str | bytes) -> str:
    if isinstance(path, bytes):
        if path.startswith(b"\0"):
            return "@" + path[1:].decode("utf-8", "backslashreplace")
        return os.fsdecode(path)
    if path.startswith("\0"):
        return "@" + path[1:]
    return path


def _unix_socket_is_live(path: str) -> bool:
    """True when a server is listening on the socket file at ``path``.

    A non-blocking connect to a unix socket completes at once: success (or
    EAGAIN, a full backlog) means a live server; ECONNREFUSED means a stale
    file left by a server that died without unlinking it.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:
            return True
        return True
    finally:
        probe.close()


def _clear_stale_unix_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"unix socket path {path!r} exists and is not a socket")
    try:
        live = _unix_socket_is_live(path)
    except OSError as e:
        raise _os_error(
            e.errno, f"cannot tell whether unix socket {path!r} is in use: {e.strerror or e}"
        ) from e
    if live:
        raise OSError(
            errno.EADDRINUSE, f"unix socket {path!r} is already in use by a running server"
        )
    log.info("removing stale unix socket %s", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def bind_unix_socket(
    path: str,
    mode: int = 0o600,
    backlog: int = DEFAULT_BACKLOG,
    owner: tuple[int, int] | None = None,
) -> socket.socket:
    """Bind a listening, non-blocking unix stream socket.

    ``path`` starting with ``"\\0"`` or ``"@"`` names a socket in the Linux
    abstract namespace: there is no file, so nothing is checked, unlinked or
    chmod'ed (access control is the network namespace).

    For a file system path:

    * an existing socket file with a live server behind it is refused
      (OSError EADDRINUSE naming the path): deleting it would silently steal
      the address from a running server;
    * a stale socket file (nobody listening) is removed;
    * any other existing file raises ValueError and is left alone;
    * the socket is bound under a umask derived from ``mode``, so it is never,
      even briefly, more permissive than ``mode``; then ``chmod(mode)`` and
      ``chown(owner)`` (a ``(uid, gid)`` pair, -1 keeps one) if given. The umask
      is process-wide: bind before starting threads.
    """
    if not path:
        raise ValueError("unix socket path is empty")
    if path.startswith("@"):
        path = "\0" + path[1:]
    abstract = path.startswith("\0")
    shown = _display_unix(path)
    if abstract and len(path) == 1:
        raise ValueError("abstract unix socket name is empty")
    if "\0" in path[1:]:
        raise ValueError(f"unix socket path {shown!r} contains a NUL byte")
    size = len(os.fsencode(path[1:] if abstract else path))
    if size > _UNIX_PATH_MAX:
        raise ValueError(
            f"unix socket path {shown!r} is too long ({size} bytes, at most {_UNIX_PATH_MAX})"
        )

    if not abstract:
        _clear_stale_unix_socket(path)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    created = False
    try:
        try:
            if abstract:
                sock.bind(path)
            else:
                old_umask = os.umask(~mode & 0o777)
                try:
                    sock.bind(path)
                finally:
                    os.umask(old_umask)
                created = True
        except OSError as e:
            raise _os_error(e.errno, f"cannot bind unix socket {shown!r}: {e.strerror or e}") from e
        if not abstract:
            os.chmod(path, mode)
            if owner is not None:
                os.chown(path, owner[0], owner[1])
        sock.setblocking(False)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        if created:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    return sock


def _close_all(
    sockets: Iterable[socket.socket], adopted: dict[int, tuple[bool, bool] | None]
) -> None:
    """Undo a failed ``listeners_from_specs``.

    Sockets bound here are closed (and their unix socket files removed).
    Adopted ``fd://N`` sockets were not ours: their blocking and inheritable
    flags are restored and the fd is left open, as received.
    """
    for s in sockets:
        if id(s) in adopted:
            was = adopted[id(s)]
            if was is not None:
                os.set_blocking(s.fileno(), was[0])
                os.set_inheritable(s.fileno(), was[1])
            s.detach()
            continue
        if s.family == socket.AF_UNIX:
            unlink_unix_sockets([s])
        s.close()


def listeners_from_specs(
    specs: Sequence[str],
    backlog: int = DEFAULT_BACKLOG,
    reuse_port: bool = False,
    unix_mode: int = 0o600,
    unix_owner: tuple[int, int] | None = None,
) -> list[socket.socket]:
    """Open the listening sockets for a list of bind specs, all or nothing.

    Every spec is parsed before anything is bound, so a typo fails fast. An
    ``fd://N`` spec adopts the inherited fd: it must be a listening stream
    socket; it is made non-blocking but ``listen()`` is not called again (that
    would reset the backlog the parent chose and is refused under some
    SELinux policies). On any failure the sockets opened so far are closed
    (unix socket files created here are removed; adopted fds are left open,
    with their flags as received) and an OSError or ValueError naming the
    spec is raised.
    """
    parsed = [(spec, parse_bind(spec)) for spec in specs]
    seen_fds: set[int] = set()
    for spec, bind in parsed:
        if bind.fd is not None:
            if bind.fd in seen_fds:
                # Two socket objects owning one fd would close it twice.
                raise ValueError(f"bind {spec!r}: fd {bind.fd} is given more than once")
            seen_fds.add(bind.fd)
    opened: list[socket.socket] = []
    adopted: dict[int, tuple[bool, bool] | None] = {}
    try:
        for spec, bind in parsed:
            try:
                if bind.kind == "tcp":
                    assert bind.port is not None
                    opened += bind_sockets(
                        bind.port, bind.host, backlog=backlog, reuse_port=reuse_port
                    )
                elif bind.kind == "unix":
                    assert bind.path is not None
                    opened.append(
                        bind_unix_socket(bind.path, unix_mode, backlog=backlog, owner=unix_owner)
                    )
                else:
                    assert bind.fd is not None
                    try:
                        was = (os.get_blocking(bind.fd), os.get_inheritable(bind.fd))
                    except OSError:
                        was = None  # not open: adopt_fd says so
                    sock = adopt_fd(bind.fd, f"fd {bind.fd}")
                    opened.append(sock)
                    adopted[id(sock)] = was
            except socket.gaierror as e:
                raise _os_error(
                    e.errno, f"bind {spec!r}: cannot resolve host {bind.host!r}: {e.strerror}"
                ) from e
            except ValueError as e:
                raise ValueError(f"bind {spec!r}: {e}") from e
            except OSError as e:
                raise _os_error(e.errno, f"bind {spec!r}: {e.strerror or e}") from e
    except BaseException:
        _close_all(opened, adopted)
        raise
    return opened


# --------------------------------------------------------------------------
# Logging and cleanup


def describe_socket(sock: socket.socket, scheme: str = "http") -> str:
    """A short name for logs: ``http://127.0.0.1:8000``, ``http://[::1]:8000``,
    ``unix:/run/x.sock`` (``scheme``: ``https`` when the workers speak TLS)."""
    try:
        name = sock.getsockname()
    except OSError:
        return f"<socket fd={sock.fileno()}>"
    if sock.family == socket.AF_INET:
        return f"{scheme}://{name[0]}:{name[1]}"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_UNIX:
        if not name:
            return "unix:(unnamed)"
        return f"unix:{_display_unix(name)}"
    return f"{sock.family.name}:{name!r}"


def unlink_unix_sockets(sockets: Iterable[socket.socket]) -> None:
    """Remove the socket files of AF_UNIX sockets, on a *final* stop only.

    Abstract sockets have no file and are skipped, as are other families.
    A missing file is ignored, and a path that is no longer a socket is left
    alone. Never call this when handing the sockets to a new master (USR2):
    it serves the same files.
    """
    for sock in sockets:
        if sock.family != socket.AF_UNIX:
            continue
        try:
            name = sock.getsockname()
        except OSError:
            continue
        if isinstance(name, bytes):
            if not name or name.startswith(b"\0"):
                continue
            name = os.fsdecode(name)
        if not name or name.startswith("\0"):
            continue
        try:
            if not stat.S_ISSOCK(os.lstat(name).st_mode):
                continue
            os.unlink(name)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove unix socket %s: %s", name, e)
