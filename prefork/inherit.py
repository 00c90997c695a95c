"""Listening sockets handed to us: ``fd://N``, systemd socket activation
(``LISTEN_FDS``), and a previous master's sockets across a USR2 re-exec
(``PREFORK_FDS``).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterable, MutableMapping

__all__ = [
    "INHERIT_ENV",
    "SD_LISTEN_FDS_START",
    "adopt_fd",
    "export_for_exec",
    "sockets_from_environment",
    "systemd_listen_fds",
    "systemd_listen_fds_with_names",
]

#: Environment variable through which a master passes its listening fds to the
#: new master it execs on USR2 (like gunicorn's GUNICORN_FD or nginx's NGINX).
INHERIT_ENV = "PREFORK_FDS"

#: The first fd of systemd socket activation (``SD_LISTEN_FDS_START``).
SD_LISTEN_FDS_START = 3

_SYSTEMD_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


log = logging.getLogger("prefork.sockets")


def _os_error(err_no: int | None, message: str) -> OSError:
    """An OSError carrying ``err_no`` (so callers can test ``e.errno``) and our message."""
    if err_no is None:
        return OSError(message)
    return OSError(err_no, message)


def adopt_fd(fd: int, label: str) -> socket.socket:
    """Wrap an inherited fd that must be a listening stream socket.

    On success the socket is non-blocking and not inheritable across exec
    (``export_for_exec`` turns that back on for a deliberate re-exec). On
    failure the fd is left open and unchanged.
    """
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise _os_error(e.errno, f"{label} is not open: {e.strerror}") from e
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"{label} is not a socket")
    sock = socket.socket(fileno=fd)
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{label} is not a stream socket ({sock.type.name})")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"{label} is not a listening socket (listen() was not called)")
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.detach()
        raise
    return sock


def _adopt_all(fds: list[int], labels: list[str]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for fd, label in zip(fds, labels, strict=True):
            sockets.append(adopt_fd(fd, label))
    except BaseException:
        # These fds were handed to this process for it to own; a failure here
        # ends startup, so close them rather than leave half-adopted sockets.
        for s in sockets:
            s.close()
        raise
    return sockets


def systemd_listen_fds_with_names(
    unset_environment: bool = True,
) -> list[tuple[str, socket.socket]]:
    """The sockets passed by systemd socket activation, with their names.

    Implements ``sd_listen_fds_with_names``: the variables apply only when
    ``LISTEN_PID`` equals this process's pid (a forked worker or a child that
    merely inherited the environment gets nothing); ``LISTEN_FDS`` sockets
    start at fd 3; names come from ``LISTEN_FDNAMES`` (``FileDescriptorName=``
    or ``--fdname=``), ``"unknown"`` where missing, as in systemd.

    With ``unset_environment`` the three variables are removed from
    ``os.environ`` whatever the outcome (like systemd), so workers, app code
    and subprocesses never see stale values. The sockets are made non-blocking
    and close-on-exec (as ``sd_listen_fds`` does). Each must be a listening
    stream socket, else ValueError naming the fd.
    """
    try:
        pid_text = os.environ.get("LISTEN_PID")
        fds_text = os.environ.get("LISTEN_FDS")
        names_text = os.environ.get("LISTEN_FDNAMES")
        if pid_text is None or fds_text is None:
            return []
        try:
            pid = int(pid_text)
        except ValueError:
            log.warning("ignoring LISTEN_PID=%r: not a number", pid_text)
            return []
        if pid != os.getpid():
            return []
        if not (fds_text.strip().isascii() and fds_text.strip().isdigit()):
            raise ValueError(f"LISTEN_FDS={fds_text!r}: not a number of file descriptors")
        count = int(fds_text)
        names = names_text.split(":") if names_text else []
        if names and len(names) != count:
            log.warning(
                "LISTEN_FDNAMES has %d names for LISTEN_FDS=%d; using 'unknown' for the rest",
                len(names),
                count,
            )
        names = (names + ["unknown"] * count)[:count]
        fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
        labels = [f"LISTEN_FDS fd {fd} ({name})" for fd, name in zip(fds, names, strict=True)]
        return list(zip(names, _adopt_all(fds, labels), strict=True))
    finally:
        if unset_environment:
            for name in _SYSTEMD_VARS:
                os.environ.pop(name, None)


def systemd_listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets passed by systemd socket activation (see the ``_with_names`` form)."""
    return [sock for _name, sock in systemd_listen_fds_with_names(unset_environment)]


def export_for_exec(sockets: Iterable[socket.socket]) -> str:
    """Prepare sockets to survive an ``exec`` of a new master; return the PREFORK_FDS value.

    Marks each fd inheritable and returns their numbers, e.g. ``"3,4,7"``, to
    put in the new process's environment under ``INHERIT_ENV``.
    """
    fds = []
    for sock in sockets:
        fd = sock.fileno()
        if fd < 0:
            raise ValueError("cannot export a closed socket")
        os.set_inheritable(fd, True)
        fds.append(str(fd))
    return ",".join(fds)


def sockets_from_environment(
    environ: MutableMapping[str, str] = os.environ,
    unset: bool = True,
) -> list[socket.socket]:
    """The listening sockets a previous master passed in ``PREFORK_FDS``.

    Used by a master that was re-exec'ed for a binary upgrade (USR2). Returns
    an empty list when the variable is absent. Each fd must be a listening
    stream socket; ``listen()`` is not called again. With ``unset`` the
    variable is removed, so children never see it.
    """
    try:
        raw = environ.get(INHERIT_ENV)
        if raw is None or not raw.strip():
            return []
        fds = []
        for part in raw.split(","):
            part = part.strip()
            if not part.isascii() or not part.isdigit():
                raise ValueError(f"{INHERIT_ENV}={raw!r}: expected fd numbers like '3,4'")
            fds.append(int(part))
        return _adopt_all(fds, [f"{INHERIT_ENV} fd {fd}" for fd in fds])
    finally:
        if unset:
            environ.pop(INHERIT_ENV, None)
