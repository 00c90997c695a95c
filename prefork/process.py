"""Process plumbing shared by the master and the workers: no HTTP, no event loop.

Child set-up after ``fork`` (signals, fds, random seed, title), pidfiles,
re-opening log files, ``prctl`` and ``sd_notify``. Kept apart from
``prefork.master`` so the master's file holds only the supervision logic.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from prefork.scoreboard import Scoreboard, WorkerContext

__all__ = [
    "WORKER_BOOT_ERROR",
    "BootFailure",
    "check_no_event_loop",
    "drain_fd",
    "exec_new_master",
    "fork_with_signals_blocked",
    "kill_quietly",
    "run_worker_entry",
    "after_fork_in_child",
    "describe_status",
    "process_is_stopped",
    "read_pidfile",
    "remove_pidfile",
    "reopen_log_files",
    "sd_notify",
    "set_parent_death_signal",
    "set_proc_title",
    "write_pidfile",
]

log = logging.getLogger("prefork.master")

#: Exit status of a worker whose entry raised before it reported ready: the
#: master does not respawn it while no worker has ever booted (no fork storm).
WORKER_BOOT_ERROR = 3


class BootFailure(Exception):
    """A worker cannot boot, for a reason its message says in one line.

    Reported without prefork's own traceback (the cause's traceback, when
    there is one, is the application's): an import error, a lifespan startup
    that failed.
    """


PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """The C library already loaded into this process (``dlopen(NULL)``).

    Not ``ctypes.util.find_library("c")``: that runs ``ldconfig -p`` as a
    child process, which every worker boot would pay for.
    """
    return ctypes.CDLL(None, use_errno=True)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread dies.

    Must be called after any setuid/setgid (a credential change clears it),
    and be followed by a ``getppid()`` check: the parent may have died
    before the call. Returns False where ``prctl`` is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def set_proc_title(title: str) -> None:
    """Set the title shown by ps/top when setproctitle is installed; silently skip otherwise."""
    try:
        import setproctitle  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    try:
        setproctitle.setproctitle(title)
    except Exception:  # pragma: no cover - a title is never worth a crash
        pass


def after_fork_in_child(
    original_handlers: Mapping[int, object],
    close_fds: Iterable[int],
    title: str | None,
) -> None:
    """Make a freshly forked child look like a clean process.

    * signal dispositions the master changed are restored to what they were
      before the master touched them, except SIGUSR1, which is ignored until
      the worker installs its own handler (``prefork.lifecycle``): the master
      forwards USR1 (reopen logs) to every worker, and its default action
      would kill a worker that is still booting;
    * no signal is blocked and no wakeup fd is set (the master's would wake
      the master's selector, not ours);
    * the master's private fds are closed;
    * ``random`` is reseeded, so workers do not share a sequence (tornado does
      the same in fork_processes).
    """
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        pass
    for signum, handler in original_handlers.items():
        try:
            signal.signal(signum, handler)  # type: ignore[arg-type]
        except (OSError, ValueError, TypeError):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # Until the worker installs its own handlers (prefork.lifecycle): a TERM
    # is remembered, so a booting worker still drains what is queued once
    # it serves; INT and QUIT (Ctrl-C reaches the whole process group) end
    # it quietly, without a KeyboardInterrupt traceback.
    signal.signal(signal.SIGTERM, _remember_term)
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGQUIT, _exit_quietly)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # Only the master talks to systemd (NotifyAccess=all would let a worker's
    # READY=1 or a stray ping through).
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    random.seed()
    if title:
        set_proc_title(title)


_term_during_boot = False


def _remember_term(signum: int, frame: object) -> None:
    global _term_during_boot
    _term_during_boot = True


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(0)


def term_received_during_boot() -> bool:
    """True if TERM arrived before the worker installed its handlers."""
    return _term_during_boot


def process_is_stopped(pid: int) -> bool:
    """True when ``pid`` is stopped (SIGSTOP, or a debugger): it cannot run a handler."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may
    # itself contain ") ".
    end = data.rfind(b")")
    return end > 0 and data[end + 2 : end + 3] in (b"T", b"t")


def describe_status(status: int) -> str:
    """``exit status N`` or ``killed by SIGKILL`` for a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"status {status:#x}"


class SystemdWatchdog:
    """``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the master's loop.

    The ping comes from the loop itself, so a stuck master stops pinging and
    systemd restarts it (``WatchdogSec=`` in the unit).
    """

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._next = 0.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SystemdWatchdog:
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
            return cls(None)
        return cls(int(usec) / 1e6 / 2)

    def ping(self, now: float) -> None:
        if self.interval is None or now < self._next:
            return
        self._next = now + self.interval
        sd_notify("WATCHDOG=1")


# --------------------------------------------------------------------------
# Log files


#: --capture-output: the file stdout and stderr go to (reopened with the logs)
_captured_path: str | None = None


def capture_output(path: str | None) -> None:
    """Point file descriptors 1 and 2 at ``path`` (appending); None: leave
    them as they are from now on.  What the process and its children write
    there (print, a C library, the interpreter's last traceback) lands in
    the file; a reopen (USR1, after logrotate) points them at the new one."""
    global _captured_path
    _captured_path = path
    if path is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def reopen_log_files() -> int:
    """Close and reopen every ``logging.FileHandler`` (after logrotate moved the file).

    Returns the number of handlers reopened. The new stream is opened before
    the old one is closed, under the handler's lock, so no record is lost
    and none goes to a closed file.
    """
    handlers: list[logging.Handler] = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    count = 0
    seen: set[int] = set()
    for handler in handlers:
        if id(handler) in seen or not isinstance(handler, logging.FileHandler):
            continue
        seen.add(id(handler))
        handler.acquire()
        try:
            handler.flush()  # pending lines (the batched access log) go to the old file
            old = handler.stream
            handler.stream = handler._open()
            if old is not None:
                try:
                    old.close()
                except OSError:
                    pass
            count += 1
        except OSError as e:
            log.warning("could not reopen log file %s: %s", handler.baseFilename, e)
        finally:
            handler.release()
    if _captured_path is not None:
        try:
            capture_output(_captured_path)
        except OSError as e:
            log.warning("could not reopen %s for stdout/stderr: %s", _captured_path, e)
    return count


# --------------------------------------------------------------------------
# pidfile


def read_pidfile(path: str) -> int | None:
    """The pid in ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return int(f.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def write_pidfile(path: str, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) atomically: a temporary file, then rename.

    A reader never sees an empty or half-written pidfile.
    """
    pid = os.getpid() if pid is None else pid
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pidfile.", dir=directory)
    try:
        os.write(fd, f"{pid}\n".encode())
        os.fchmod(fd, 0o644)
        os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Remove ``path`` only if it still holds ``pid`` (default: ours)."""
    pid = os.getpid() if pid is None else pid
    if read_pidfile(path) == pid:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------
# systemd


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd if NOTIFY_SOCKET is set.

    Returns False when there is no socket or the send failed; never raises:
    a supervisor that cannot be told is no reason to stop serving.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
        return True
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            log.debug("sd_notify(%r) failed: %s", state, e)
        return False


# --------------------------------------------------------------------------
# Fork helpers


def check_no_event_loop() -> None:
    """Raise RuntimeError if an event loop exists in this process (it must not cross a fork).

    A loop's selector (epoll fd), its self-pipe and its callbacks would be
    shared by every worker. Checks the running loop, the loop set for this
    thread, and ``prefork.worker.ioloop.IOLoop`` if that module was imported
    (without importing it: the master knows nothing of HTTP).
    """
    hint = (
        "an asyncio event loop already exists in this process before the fork "
        "(created at import time or by debug/autoreload?): create the IOLoop after start(n)"
    )
    aio = sys.modules.get("asyncio")
    if aio is not None:
        try:
            aio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(hint + " [a loop is running]")
        try:
            policy = aio.get_event_loop_policy()
        except Exception:  # pragma: no cover - a future asyncio without policies
            policy = None
        local = getattr(policy, "_local", None)
        loop = getattr(local, "_loop", None)
        if loop is not None and not loop.is_closed():
            raise RuntimeError(hint + " [a loop is set for this thread]")
    ioloop = sys.modules.get("prefork.worker.ioloop")
    initialized = getattr(getattr(ioloop, "IOLoop", None), "initialized", None)
    if callable(initialized) and initialized():
        raise RuntimeError(hint + " [IOLoop.instance() exists]")


def fork_with_signals_blocked(signals: Iterable[int]) -> int:
    """``os.fork()`` with ``signals`` blocked until the child has reset its handlers.

    Without this, a signal sent to a just-forked child (TTOU retiring a
    booting worker, say) runs the master's handler in the child, and the
    inherited wakeup fd writes the signal number into the *master's* pipe:
    the master would act on a signal it never got. The child unblocks in
    ``after_fork_in_child``; the parent at once. Signals that reach the
    parent meanwhile stay pending and are delivered on unblocking.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:  # the parent, or fork failed
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


#: the worker_exit server hook of this worker process, run once (see run_exit_hook)
_exit_hook: Callable[[], object] | None = None


def set_exit_hook(hook: Callable[[], object] | None) -> None:
    """What :func:`run_exit_hook` runs: the worker's ``worker_exit`` hook."""
    global _exit_hook
    _exit_hook = hook


def run_exit_hook() -> None:
    """Run the worker's exit hook, once: as it exits, or before it aborts on
    the master's SIGABRT (after ``worker_abort``, as gunicorn runs
    ``worker_exit`` after it), since ``os.abort`` runs no ``finally``."""
    global _exit_hook
    hook, _exit_hook = _exit_hook, None
    if hook is not None:
        hook()


def run_worker_entry(
    entry: Callable[[WorkerContext], None],
    ctx: WorkerContext,
    board: Scoreboard,
    at_exit: Callable[[], object] | None = None,
) -> NoReturn:
    """Run a worker entry in the forked child and exit with a status the master understands.

    0 when it returns (or exits quietly on KeyboardInterrupt: Ctrl-C reaches
    the whole process group); 1 when it raises after reporting ready;
    WORKER_BOOT_ERROR (3) when it raises before, so the master does not
    respawn an application that cannot even import. Before any worker was
    ever ready only the first failing worker logs its traceback: N workers
    failing at the same import show the cause once.
    """
    status = 0
    set_exit_hook(at_exit)
    try:
        entry(ctx)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        status = 0
    except BootFailure as exc:
        status = 1 if ctx.slot.booted else WORKER_BOOT_ERROR
        if ctx.slot.booted or board.claim_boot_error_report():
            cause = exc.__cause__
            where = ""
            if cause is not None and cause.__traceback__ is not None:
                # The application's frames, without repeating its message.
                where = "\nTraceback (most recent call last):\n" + "".join(
                    traceback.format_tb(cause.__traceback__)
                ).rstrip("\n")
            logging.getLogger("prefork.worker").error(
                "worker %d (pid %d) cannot boot: %s%s", ctx.index, os.getpid(), exc, where
            )
    except BaseException:
        booted = ctx.slot.booted
        status = 1 if booted else WORKER_BOOT_ERROR
        if booted or board.claim_boot_error_report():
            logging.getLogger("prefork.worker").exception(
                "worker %d (pid %d) failed", ctx.index, os.getpid()
            )
    finally:
        run_exit_hook()  # the worker_exit server hook (it logs what it raises)
        # The batched access log's pending lines, explicitly: an application's
        # dictConfig may have taken its handler off logging.shutdown()'s list.
        accesslog = sys.modules.get("prefork.worker.accesslog")
        if accesslog is not None:
            try:
                accesslog.close()
            except Exception:
                traceback.print_exc()
        statsd = sys.modules.get("prefork.statsd")
        if statsd is not None:
            statsd.close_all()  # (--statsd-host: the last second's figures)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(status)


def exec_new_master(
    argv: list[str],
    env: dict[str, str],
    original_handlers: Mapping[int, object],
    cwd: str | None = None,
    before_exec: Callable[[], object] | None = None,
) -> NoReturn:
    """In the child forked for USR2: exec the new master (from ``cwd``, the
    directory the first master was started in, not its --chdir); exit 127
    if exec fails.  ``before_exec`` (the pre_exec hook) runs first, here:
    what it closes or changes is this child's, not the serving master's."""
    try:
        after_fork_in_child(original_handlers, [], None)
        if before_exec is not None:
            before_exec()
        if cwd is not None:
            os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    except BaseException as e:
        try:
            os.write(2, f"prefork: exec {argv[0]} failed: {e}\n".encode())
        finally:
            os._exit(127)


def drain_fd(fd: int) -> bytes:
    """Read everything available from a non-blocking fd."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def kill_quietly(pid: int, sig: int) -> None:
    """``os.kill`` that ignores a process that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
