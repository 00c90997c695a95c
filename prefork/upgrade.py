"""USR2: replace the running master by a freshly exec'd one, without closing the sockets.

The nginx/gunicorn binary upgrade, reduced to its safe core:

1. the old master renames its pidfile to ``PIDFILE.oldbin``, forks, and the
   child execs ``reexec_argv`` with the listening fds marked inheritable and
   named in ``PREFORK_FDS``, and ``PREFORK_MASTER_PID`` set to the old pid;
2. the new master takes the sockets from the environment (its bind settings
   are not used: the sockets are already bound), writes ``PIDFILE``, and
   starts its workers, which accept side by side with the old ones;
3. once all of them are ready it sends TERM to the old master, which retires
   its workers gracefully and exits *without* unlinking unix sockets (the new
   master serves them) and removes ``PIDFILE.oldbin``;
4. if the new master dies first, the old one keeps serving and takes its
   pidfile back. A USR2 while an upgrade is in progress is ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence

from prefork import process

__all__ = ["MASTER_PID_ENV", "Upgrade"]

log = logging.getLogger("prefork.master")

#: Environment variable naming the old master in a master exec'd by USR2.
MASTER_PID_ENV = "PREFORK_MASTER_PID"
#: "0" when the handed-over unix sockets belong to systemd (never unlinked).
UNLINK_ENV = "PREFORK_UNLINK_UNIX"


class Upgrade:
    """The upgrade state of one master: as the old one (``child_pid``) or the new one."""

    def __init__(self) -> None:
        #: pid of the new master we exec'd, while it runs
        self.child_pid: int | None = None
        #: we were told to stop while a new master runs: hand over, don't clean up its files
        self.handing_over = False
        #: in a new master: the old master to retire once our workers are ready
        self.old_master_pid: int | None = None
        old = os.environ.pop(MASTER_PID_ENV, None)
        if old and old.isdigit() and int(old) == os.getppid():
            self.old_master_pid = int(old)

    @property
    def in_progress(self) -> bool:
        return self.child_pid is not None

    def start(
        self,
        sockets: Sequence[socket.socket],
        argv: list[str],
        pidfile: str | None,
        original_handlers: Mapping[int, object],
        signals: Sequence[int],
        unlink_unix: bool = True,
        cwd: str | None = None,
        before_exec: Callable[[], object] | None = None,
    ) -> None:
        """Fork and exec the new master (USR2), in ``cwd`` if given;
        ``before_exec`` runs in the forked child, just before the exec (the
        ``pre_exec`` server hook, where gunicorn runs it)."""
        if self.child_pid is not None:
            log.warning(
                "received SIGUSR2: upgrade to pid %d already in progress; ignored", self.child_pid
            )
            return
        if self.old_master_pid is not None:
            log.warning("received SIGUSR2: this master is itself still taking over; ignored")
            return
        from prefork.sockets import INHERIT_ENV, export_for_exec

        env = dict(os.environ)
        env[INHERIT_ENV] = export_for_exec(sockets)
        env[MASTER_PID_ENV] = str(os.getpid())
        env[UNLINK_ENV] = "1" if unlink_unix else "0"
        if pidfile:
            try:
                os.rename(pidfile, pidfile + ".oldbin")
            except OSError as e:
                log.warning("could not rename pidfile %s: %s", pidfile, e)
        try:
            pid = process.fork_with_signals_blocked(signals)
        except OSError as e:
            log.error("received SIGUSR2: fork failed: %s", e)
            pid = -1
        if pid == 0:
            process.exec_new_master(argv, env, original_handlers, cwd, before_exec)
        for s in sockets:
            os.set_inheritable(s.fileno(), False)
        if pid < 0:
            self._restore_pidfile(pidfile)
            return
        self.child_pid = pid
        log.info("received SIGUSR2: started new master %d (%s)", pid, " ".join(argv))

    def child_exited(self, status: int, pidfile: str | None) -> None:
        """The new master exited: if it had not taken over, keep serving."""
        pid, self.child_pid = self.child_pid, None
        if self.handing_over:
            return
        log.error(
            "new master %d exited (%s) before taking over; this master keeps serving",
            pid,
            process.describe_status(status),
        )
        self._restore_pidfile(pidfile)

    def _restore_pidfile(self, pidfile: str | None) -> None:
        if pidfile:
            process.write_pidfile(pidfile)
            process.remove_pidfile(pidfile + ".oldbin")

    def promote(self) -> None:
        """In a new master whose workers are all ready: retire the old master."""
        old, self.old_master_pid = self.old_master_pid, None
        if old is None:
            return
        if os.getppid() != old:
            log.warning("old master %d is already gone", old)
            return
        process.sd_notify(f"MAINPID={os.getpid()}")
        log.info("upgrade complete: sending TERM to old master %d", old)
        process.kill_quietly(old, signal.SIGTERM)
