"""The master: forks workers onto shared listening sockets and keeps them alive.

It knows nothing of HTTP. A worker is "a function that serves these sockets
until told to stop" (``worker_entry``), or, with no entry, whatever code runs
after ``Master.run()`` returns in the child (how ``HTTPServer.start(n)`` works).

The loop is single-threaded and never blocks for long. Signal handlers do
nothing but let ``signal.set_wakeup_fd`` write the signal number into a pipe,
so every delivered signal is handled once, in order, in the loop. Waiting for
a worker to boot or to drain is state that the loop looks at on every pass
(at most every 0.1 s), never a blocking call. Children are reaped with
``waitpid(-1, WNOHANG)`` in the loop, unknown ones too (safe as PID 1).

Signals: TERM graceful stop; INT, QUIT fast stop; HUP reload (``reload_hook``)
then roll the workers one at a time, each old worker retired only once its
replacement is ready; TTIN/TTOU one worker more/fewer (a booting one
retires first, else the highest-numbered: workers stay numbered 0..n-1);
USR1 reopen log files here and in every worker; USR2 exec a new master that
inherits the sockets, and retire this one once the new one's workers are ready.
See ``prefork.lifecycle`` for the worker's half of the contract.
"""

from __future__ import annotations

import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefork import appmetrics, process, scoreboard
from prefork.children import Backoff, MemoryWatch, Worker
from prefork.hooks import GunicornConfig, WorkerView, call_hook, worker_view
from prefork.metrics_server import MetricsServer
from prefork.process import WORKER_BOOT_ERROR, check_no_event_loop, describe_status, sd_notify
from prefork.scoreboard import Scoreboard, SlotSnapshot, SlotState, WorkerContext
from prefork.settings import Config, make_config
from prefork.upgrade import MASTER_PID_ENV, UNLINK_ENV, Upgrade

__all__ = ["MASTER_PID_ENV", "Master", "check_no_event_loop", "fork_workers"]

log = logging.getLogger("prefork.master")

TICK = 0.1  # seconds between checks of heartbeats, deadlines and back-off timers
FAST_STOP_TIMEOUT = 2.0  # deadline of INT/QUIT before leftovers are killed

_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


class _InChild(BaseException):
    """Raised in a freshly forked child to unwind the master loop up to ``run()``."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx


class Master:
    """Supervises ``workers`` forked workers sharing ``sockets``. See the module docstring.

    Settings are public attributes; a ``reload_hook`` may change them (they
    apply to workers forked after it). ``reload_hook`` runs in the master on
    HUP; if it raises, the old configuration stays and one line is logged.
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket] | None = None,
        *,
        config: Config | None = None,
        bind: Sequence[str] = (),
        worker_entry: Callable[[WorkerContext], None] | None = None,
        reload_hook: Callable[[], Config | None] | None = None,
        reexec_argv: Sequence[str] | None = None,
        reexec_cwd: str | None = None,
        unix_owner: tuple[int, int] | None = None,
        scoreboard_path: str | None = None,
        pre_fork_checks: Sequence[Callable[[], None]] = (),
        unlink_unix: bool = True,
        **settings: Any,
    ) -> None:
        """``config``: every setting (the CLI passes the one it loaded);
        ``settings``: any of them by name on top (``workers=2, timeout=10``)."""
        self.config: Config = make_config(config, **settings)
        if self.config.timeout < 0 or self.config.boot_timeout <= 0:
            raise ValueError("timeout must be >= 0 (0: none), boot_timeout > 0")
        self.sockets: list[socket.socket] | None = list(sockets) if sockets is not None else None
        self.bind = list(bind)
        self.worker_entry = worker_entry
        self.reload_hook = reload_hook
        # sys.orig_argv keeps "-m module", which sys.argv loses.
        self.reexec_argv = list(reexec_argv or [sys.executable, *sys.orig_argv[1:]])
        #: where the new master of a USR2 starts: where this one was started
        #: (the CLI's, before --chdir), so its relative arguments mean the same
        self.reexec_cwd = reexec_cwd
        self.unix_owner = unix_owner
        pidfile = self.config.pidfile
        self.scoreboard_path = scoreboard_path or (pidfile + ".scoreboard" if pidfile else None)
        self.pre_fork_checks = list(pre_fork_checks)
        #: remove unix socket files on the final stop: only those prefork
        #: bound itself (systemd's ListenStream= files belong to systemd).
        self.unlink_unix = unlink_unix
        #: what hooks call ``server.log``
        self.log = log
        self._cfg_view: tuple[Config, GunicornConfig] | None = None
        #: when no worker of the first generation can boot, wait for a HUP
        #: (``--reload``'s: the developer's next save) instead of exiting 3
        self.wait_for_fix = False
        self._waiting_for_fix = False

        self.pid = os.getpid()
        self.scoreboard: Scoreboard | None = None
        self._workers: dict[int, Worker] = {}
        self._target = 0
        #: --statsd-host: the master's statsd client (see _setup_statsd)
        self._statsd: Any = None
        self._workers_setting = 0
        self._generation = 1
        self._free_slots: list[int] = []
        self._backoff: dict[int, Backoff] = {}
        self._forks = 0
        self._ever_ready = False
        self._announced_ready = False
        self._hold_spawns = False
        self._last_boot_status: int | None = None
        self._stopping: str | None = None
        self._listeners_closed = False
        self._watchdog = process.SystemdWatchdog.from_environment()
        self._stop_deadline = 0.0
        self._killed_leftovers = False
        self._exit_status = 0
        self._reloading = False
        self._roll_aborted_gen = 0
        self._replace_fails = 0
        self._replace_retry_at = 0.0
        self._memory = MemoryWatch()
        self._upgrade: Upgrade | None = None
        self._orig_handlers: dict[int, Any] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = self._notify_r = self._notify_w = -1
        #: --metrics-bind, and the application's prometheus_client directory
        self._metrics_server: MetricsServer | None = None
        self._app_metrics: appmetrics.MultiprocDir | None = None

    # ------------------------------------------------------------------ public
    def open_sockets(self) -> list[socket.socket]:
        """The listening sockets: given, inherited (PREFORK_FDS, LISTEN_FDS) or bound.

        Sockets handed over by a previous master (USR2) or by systemd win over
        ``bind``: they are already bound to the configured addresses.
        """
        from prefork import sockets as sk

        if self.sockets is None:
            inherited = sk.sockets_from_environment()
            source = sk.INHERIT_ENV
            if not inherited:
                inherited, source = sk.systemd_listen_fds(), "LISTEN_FDS"
            if inherited:
                log.info("using %d listening socket(s) from %s", len(inherited), source)
                self.sockets = inherited
                if source == "LISTEN_FDS" or os.environ.get(UNLINK_ENV) == "0":
                    self.unlink_unix = False  # systemd owns those socket files
            elif self.bind:
                self.sockets = sk.listeners_from_specs(
                    self.bind,
                    self.config.backlog,
                    self.config.reuse_port,
                    self.config.unix_socket_mode,
                    self.unix_owner,
                )
            else:
                raise ValueError("no listening socket: pass sockets or bind addresses")
        return self.sockets

    @property
    def cfg(self) -> GunicornConfig:
        """The settings, for server hooks: gunicorn's ``server.cfg``, which
        migrated hooks read by gunicorn's names (``cfg.keepalive``)."""
        cfg = self._cfg_view
        if cfg is None or cfg[0] is not self.config:  # (a HUP loads new settings)
            cfg = self._cfg_view = (self.config, GunicornConfig(self.config))
        return cfg[1]

    @property
    def proc_name(self) -> str:
        """gunicorn's ``server.proc_name`` (the process title's name)."""
        return self.config.proc_name or "prefork"

    @property
    def app(self) -> Any:
        """gunicorn's ``server.app``; here the application's spec
        (``MODULE:CALLABLE``), since the master does not load it unless --preload."""
        return self.config.app

    @property
    def address(self) -> list[Any]:
        """gunicorn's ``server.address``: (host, port) or a unix path per bind."""
        return self.cfg.address  # type: ignore[no-any-return]

    @property
    def timeout(self) -> float:
        """gunicorn's ``server.timeout``."""
        return self.config.timeout

    @property
    def LISTENERS(self) -> list[socket.socket]:  # noqa: N802 (gunicorn's name)
        """gunicorn's ``server.LISTENERS``: the listening sockets."""
        return list(self.sockets or ())

    @property
    def WORKERS(self) -> dict[int, WorkerView]:  # noqa: N802 (gunicorn's name)
        """gunicorn's ``server.WORKERS``: pid -> worker, the live workers."""
        return {pid: self._view(w) for pid, w in sorted(self._workers.items())}

    @property
    def num_workers(self) -> int:
        """How many workers the master keeps (gunicorn's name, for server hooks);
        in ``on_starting``, before anything is forked, how many it will start."""
        if self._target:
            return self._target
        from prefork import cpus

        return self.config.workers or cpus.default_workers(os.environ)

    def _view(self, w: Worker) -> WorkerView:
        return WorkerView(w.index, w.generation, w.slot, self.config, w.pid, self.pid)

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the live workers (booting, ready and draining)."""
        return sorted(self._workers)

    def snapshot(self) -> list[SlotSnapshot]:
        """What each live worker last wrote in its scoreboard slot (for status reports)."""
        return [w.slot.snapshot() for w in self._workers.values()]

    def run(self) -> WorkerContext:
        """Supervise until stopped, then ``sys.exit(status)``: never returns in the master.

        Exit status: 0 after a clean stop, 3 when no worker of the first
        generation ever got ready, 1 on a runtime error. In a child with no
        ``worker_entry`` this returns the child's WorkerContext; with an
        entry, the child calls it and exits (0; 1 if it raised; 3 if it raised
        before reporting ready).
        """
        for check in [check_no_event_loop, *self.pre_fork_checks]:
            check()
        if self.config.hooks.nworkers_changed is not None:
            # gunicorn calls it as its arbiter first sets num_workers, with
            # old_value None, before on_starting (a hook that keeps a gauge
            # of the workers counts from there).
            try:
                first = self.num_workers
            except ValueError:
                pass  # (a bad WEB_CONCURRENCY: the setup below says so and exits)
            else:
                call_hook(self.config, "nworkers_changed", self, first, None)
        if not call_hook(self.config, "on_starting", self):
            log.error("server hook on_starting failed: not starting")
            sys.exit(2)
        try:
            status = self._run()
        except _InChild as child:
            return child.ctx
        sys.exit(status)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> int | None:
        from prefork import cpus

        try:
            self.open_sockets()
            self._target = self.config.workers or cpus.default_workers(os.environ)
            self._workers_setting = self.config.workers
        except ValueError as e:
            log.error("%s", e)
            return 2
        except OSError as e:
            log.error("%s", e)
            return 1
        self._upgrade = Upgrade()
        self._setup_statsd()
        failed = self._setup_metrics()
        if failed is not None:
            return failed
        if self.config.pidfile:
            other = process.read_pidfile(self.config.pidfile)
            if other and other != self.pid and process.pid_is_alive(other):
                # A clash of this configuration with what runs (as --bind's
                # address in use): a usage error, exit 2, naming the setting.
                log.error(
                    "--pidfile: %s names running process %d: already running? (stop it, "
                    "give another --pidfile, or remove the file if that process is not prefork)",
                    self.config.pidfile,
                    other,
                )
                return 2
            process.write_pidfile(self.config.pidfile)
        capacity = max(128, 4 * self._target + 32)
        old_board = self._previous_scoreboard()
        # A master exec'd by USR2 takes the scoreboard's name as it takes over
        # (_on_ready): if it fails before, the old master's stays in place.
        self.scoreboard = Scoreboard(
            capacity, self.scoreboard_path, published=self._upgrade.old_master_pid is None
        )
        if old_board is not None:
            self.scoreboard.inherit(old_board)
            old_board.close()
        self.scoreboard.master.set_info(self._target, self._generation)
        if self._metrics_server is not None:
            self._metrics_server.start(self.scoreboard, lambda: self.sockets or [])
        self._free_slots = list(range(capacity))
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._notify_r, self._notify_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector.register(self._notify_r, selectors.EVENT_READ)
        for sig in _SIGNALS:
            self._orig_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, _ignore_in_python)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        process.set_proc_title(f"{self.config.proc_name}: master")
        assert self.sockets is not None
        from prefork.sockets import describe_socket

        log.info(
            "master %d listening on %s, %d worker(s)",
            self.pid,
            ", ".join(
                describe_socket(s, "https" if self.config.certfile else "http")
                for s in self.sockets
            ),
            self._target,
        )
        return None

    def _setup_metrics(self) -> int | None:
        """--metrics-bind's listener (before any fork); the application's
        prometheus_client directory (see ``prefork.appmetrics``)."""
        config = self.config
        if not (config.metrics_path or config.metrics_bind):
            return None
        self._app_metrics = appmetrics.prepare()
        if config.metrics_bind:
            server = MetricsServer(
                config.metrics_bind,
                {config.metrics_path or "/metrics", "/metrics"},
                config.unix_socket_mode,
            )
            assert self._upgrade is not None
            try:
                server.bind(retry_if_busy=self._upgrade.old_master_pid is not None)
            except (OSError, ValueError) as e:
                # (as --bind: an address that cannot be had is the setting's mistake)
                log.error("--metrics-bind: %s", getattr(e, "strerror", None) or e)
                return 2
            self._metrics_server = server
        return None

    def _close_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._app_metrics is not None:
            self._app_metrics.remove()

    def _previous_scoreboard(self) -> Scoreboard | None:
        """After a USR2 upgrade: the old master's scoreboard, to carry its
        counters over (only from a scoreboard of this layout version)."""
        assert self._upgrade is not None
        if self._upgrade.old_master_pid is None or not self.scoreboard_path:
            return None
        try:
            return Scoreboard.attach(self.scoreboard_path)
        except (OSError, ValueError) as e:
            log.info("metrics: counters start from zero (previous scoreboard: %s)", e)
            return None

    def _run(self) -> int:
        failed = self._setup()
        if failed is not None:
            self._close_metrics()
            return failed
        try:
            while True:
                now = time.monotonic()
                self._watchdog.ping(now)
                if self._metrics_server is not None:
                    self._metrics_server.poll(now)
                self._reap(now)
                self._check_workers(now)
                if self._stopping is not None:
                    if not self._workers or self._enforce_stop_deadline(now):
                        break
                elif not self._ever_ready and not self._workers and self._hold_spawns:
                    if not self.wait_for_fix:
                        log.error(
                            "worker failed to boot (%s); see its error above",
                            describe_status(self._last_boot_status or 0),
                        )
                        self._exit_status = 3
                        break
                    if not self._waiting_for_fix:
                        self._waiting_for_fix = True
                        log.error(
                            "worker failed to boot (%s); see its error above. "
                            "--reload: waiting for a change to the code",
                            describe_status(self._last_boot_status or 0),
                        )
                else:
                    self._manage(now)
                self._wait()
        except _InChild:
            raise
        except Exception:
            log.exception("master failed; stopping the workers")
            for pid in self._workers:
                process.kill_quietly(pid, signal.SIGTERM)
            self._exit_status = 1
        self._cleanup()
        return self._exit_status

    def _cleanup(self) -> None:
        call_hook(self.config, "on_exit", self)
        signal.set_wakeup_fd(-1)
        for sig, handler in self._orig_handlers.items():
            signal.signal(sig, handler)
        if self._selector is not None:
            self._selector.close()
        for fd in (self._wake_r, self._wake_w, self._notify_r, self._notify_w):
            os.close(fd)
        self._close_listeners()
        self._close_metrics()
        if self.config.pidfile:
            process.remove_pidfile(self.config.pidfile + ".oldbin")
            process.remove_pidfile(self.config.pidfile)
        if self.scoreboard is not None:
            self.scoreboard.close(unlink=True)
        log.info("master %d exiting (status %d)", self.pid, self._exit_status)

    # ------------------------------------------------------------------ events
    def _wait(self) -> None:
        assert self._selector is not None
        self._selector.select(TICK)
        signals = process.drain_fd(self._wake_r)
        process.drain_fd(self._notify_r)
        for signum in signals:
            if signum != signal.SIGCHLD:
                self._handle_signal(signum)

    def _handle_signal(self, signum: int) -> None:
        """Look the signal up in the table; while stopping, only stop signals count."""
        handler, during_stop = _SIGNAL_TABLE.get(signum, (None, False))
        if handler is None:
            return
        if self._stopping is not None and not during_stop:
            log.info("received %s while stopping: ignored", _signal_name(signum))
            return
        handler(self)

    def _on_term(self) -> None:
        assert self._upgrade is not None
        self._upgrade.handing_over |= self._upgrade.in_progress
        self._stop("graceful")

    def _on_fast_stop(self) -> None:
        self._stop("fast")

    def _on_ttin(self) -> None:
        assert self.scoreboard is not None
        if self._target >= self.scoreboard.capacity // 2:
            log.warning("received SIGTTIN: already at the maximum of %d workers", self._target)
            return
        log.info("received SIGTTIN: workers %d -> %d", self._target, self._target + 1)
        self._set_target(self._target + 1)

    def _on_ttou(self) -> None:
        log.info("received SIGTTOU: workers %d -> %d", self._target, max(1, self._target - 1))
        self._set_target(max(1, self._target - 1))

    def _on_usr1(self) -> None:
        n = process.reopen_log_files()
        log.info("received SIGUSR1: reopened %d log file(s); telling the workers", n)
        for w in self._workers.values():
            if w.ready_at is not None:
                process.kill_quietly(w.pid, signal.SIGUSR1)
            else:
                w.usr1_pending = True

    def _on_usr2(self) -> None:
        assert self._upgrade is not None and self.sockets is not None
        self._upgrade.start(
            self.sockets,
            self.reexec_argv,
            self.config.pidfile,
            self._orig_handlers,
            _SIGNALS,
            self.unlink_unix,
            cwd=self.reexec_cwd,
            before_exec=lambda: call_hook(self.config, "pre_exec", self),
        )

    def _setup_statsd(self) -> None:
        """``--statsd-host``: the ``gunicorn.workers`` gauge and the master's
        log counts (sent at once: rare events)."""
        if not self.config.statsd_host:
            return
        from prefork import statsd

        self._statsd = statsd.start(self.config)
        if self._statsd is not None:
            self._statsd.gauge("gunicorn.workers", self._target)

    def _set_target(self, target: int) -> None:
        old, self._target = self._target, target
        if self._statsd is not None:
            self._statsd.gauge("gunicorn.workers", target)
        if self.scoreboard is not None:
            self.scoreboard.master.set_info(target, self._generation)
        if old != target:
            call_hook(self.config, "nworkers_changed", self, target, old)

    def _stop(self, kind: str) -> None:
        now = time.monotonic()
        if self._stopping == "fast" or self._stopping == kind:
            log.info("already stopping (%s)", self._stopping)
            return
        self._stopping = kind
        if kind == "graceful":
            self._stop_deadline = now + self.config.graceful_timeout
            handing_over = self._upgrade is not None and self._upgrade.handing_over
            what = "handing over to the new master" if handing_over else "graceful stop"
            log.info(
                "%s: %d worker(s) finishing within %g s",
                what,
                len(self._workers),
                self.config.graceful_timeout,
            )
        else:
            self._stop_deadline = min(self._stop_deadline or now + 3600, now + FAST_STOP_TIMEOUT)
            log.info("fast stop: %d worker(s)", len(self._workers))
        if not (self._upgrade is not None and self._upgrade.handing_over):
            sd_notify("STOPPING=1")  # a hand-over is not a stop of the service
        handing_over = self._upgrade is not None and self._upgrade.handing_over
        for w in self._workers.values():
            booting = w.ready_at is None
            w.retiring = "stop"
            # A hand-over (USR2) replaces the service: its WebSockets hear
            # 1012 Service Restart (reconnect), not 1001 Going Away.
            w.slot.set_restarting(handing_over)
            process.kill_quietly(
                w.pid, signal.SIGTERM if kind == "graceful" or booting else signal.SIGQUIT
            )
        self._close_listeners()

    def _close_listeners(self) -> None:
        """Let go of the listening sockets once the final stop has begun.

        The workers take what is already queued and then close their copies;
        if the master kept its copy, the kernel would go on completing
        handshakes that nobody accepts, and reset them at exit.  Without it,
        a late client is refused at connect (or, for a unix socket whose file
        is gone, finds no socket) and can retry elsewhere.
        """
        from prefork.sockets import unlink_unix_sockets

        if self._listeners_closed:
            return
        self._listeners_closed = True
        assert self._upgrade is not None
        upgrade = self._upgrade
        # Not while a new master serves them (handing over, or one running),
        # nor in a new master that has not taken over: the old one still does.
        if (
            self.unlink_unix
            and not upgrade.handing_over
            and not upgrade.in_progress
            and upgrade.old_master_pid is None
        ):
            unlink_unix_sockets(self.sockets or [])
        for sock in self.sockets or []:
            sock.close()

    def _enforce_stop_deadline(self, now: float) -> bool:
        """SIGKILL what is left at the stop deadline; True to give up 5 s after that."""
        if now < self._stop_deadline:
            return False
        if self._killed_leftovers:
            if now < self._stop_deadline + 5.0:
                return False
            log.error("giving up on unkillable worker(s) %s", " ".join(map(str, self._workers)))
            return True
        self._killed_leftovers = True
        log.warning(
            "%d worker(s) still running after the stop deadline: SIGKILL %s",
            len(self._workers),
            " ".join(map(str, self._workers)),
        )
        for pid in self._workers:
            process.kill_quietly(pid, signal.SIGKILL)
        return False

    def _reload(self) -> None:
        log.info("received SIGHUP: reloading")
        sd_notify(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )
        if self.reload_hook is not None:
            try:
                new = self.reload_hook()
            except Exception as e:
                log.error(
                    "reload failed, keeping the old configuration: %s: %s", type(e).__name__, e
                )
                sd_notify("READY=1")
                return
            if new is not None:
                changed = self.config.changes(new)
                self.config = new
                if changed:
                    log.info("reloaded settings: %s changed", ", ".join(changed))
        call_hook(self.config, "on_reload", self)
        if self.config.workers != self._workers_setting:
            from prefork import cpus

            self._workers_setting = self.config.workers
            target = self.config.workers or cpus.default_workers(os.environ)
            log.info("workers %d -> %d (from the reloaded configuration)", self._target, target)
            self._set_target(target)
        self._generation += 1
        self._reloading = True
        self._forgive_failures()
        if self._waiting_for_fix:  # (--reload: the save that may fix the boot)
            self._waiting_for_fix = self._hold_spawns = False
        if self.scoreboard is not None:
            self.scoreboard.master.count_reload()
            self.scoreboard.master.set_info(self._target, self._generation)
        if self._app_metrics is None and (self.config.metrics_path or self.config.metrics_bind):
            self._app_metrics = appmetrics.prepare()  # metrics turned on by this reload

    def _forgive_failures(self) -> None:
        """A reload brings new code (the operator's fix, often): the back-off
        earned by the old code's failed replacements (reload, recycle) and
        by crash-looping positions must not hold the new generation back.
        Should the new code fail too, the back-off starts again from zero."""
        self._replace_fails = 0
        self._replace_retry_at = 0.0
        for backoff in self._backoff.values():
            backoff.forgive()

    # ------------------------------------------------------------------ reaping
    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self._upgrade is not None and pid == self._upgrade.child_pid:
                self._upgrade.child_exited(status, self.config.pidfile)
                continue
            w = self._workers.pop(pid, None)
            if w is None:
                log.info("reaped unknown child %d (%s)", pid, describe_status(status))
                continue
            call_hook(self.config, "child_exit", self, self._view(w))
            assert self.scoreboard is not None
            self.scoreboard.master.count_exit(w.exit_reason())
            self.scoreboard.retire(w.slot)  # its counts join the retired totals
            if self._app_metrics is not None:
                self._app_metrics.worker_exited(pid)
            self._free_slots.append(w.slot.number)
            self._worker_exited(w, status, now)

    def _worker_exited(self, w: Worker, status: int, now: float) -> None:
        how = describe_status(status)
        for other in self._workers.values():
            if other.replaces is w:  # its replacement takes the position now
                other.replaces = None
        if w.retiring:
            stop_signals = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)
            fine = (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or (
                os.WIFSIGNALED(status) and os.WTERMSIG(status) in stop_signals
            )
            (log.info if fine else log.warning)("%s exited (%s)", w, how)
            return
        if w.replaces is not None:
            log.error(
                "%s failed to boot (%s): %s aborted, keeping pid %d",
                w,
                how,
                w.purpose,
                w.replaces.pid,
            )
            self._replacement_failed(w, now)
            return
        if w.ready_at is None:
            log.error("%s failed to boot (%s)", w, how)
            if not self._ever_ready:
                self._last_boot_status = status
                boot_error = os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR
                if boot_error or self._forks >= 2 * self._target - 1:
                    self._hold_spawns = True
        else:
            log.error("%s died (%s) after %.1f s", w, how, now - w.forked_at)
        self._backoff.setdefault(w.index, Backoff()).failed(now, w.ready_at, w.index)
        self._backoff[w.index].died_at = now

    def _replacement_failed(self, w: Worker, now: float) -> None:
        if self._reloading and w.purpose == "reload":
            self._roll_aborted_gen = self._generation
            self._reloading = False
            sd_notify("READY=1")
        self._replace_fails += 1
        self._replace_retry_at = now + min(30.0, 0.5 * 2 ** (self._replace_fails - 1))

    # ------------------------------------------------------------------ checks
    def _check_workers(self, now: float) -> None:
        for w in list(self._workers.values()):
            state = w.slot.state
            if w.ready_at is None and w.slot.booted:
                w.ready_at = now
                self._on_ready(w, now)
            if state == SlotState.DRAINING and not w.retiring and self._stopping is None:
                log.info("%s is draining on its own: starting its replacement", w)
                w.retiring = "self"
                w.kill_at = now + self.config.graceful_timeout
                if w.replaces is not None:
                    w.replaces = None
                    self._replacement_failed(w, now)
            w.check_deadlines(now, self.config.timeout, self.config.boot_timeout)

    def _on_ready(self, w: Worker, now: float) -> None:
        assert self.scoreboard is not None
        if not self._ever_ready:
            self._ever_ready = True
            self._hold_spawns = False
            self.scoreboard.set_ever_ready()
        if w.usr1_pending:
            process.kill_quietly(w.pid, signal.SIGUSR1)
        backoff = self._backoff.get(w.index)
        if backoff is not None and backoff.died_at is not None:
            log.info(
                "%s ready: accepting %.1f ms after its predecessor died",
                w,
                (now - backoff.died_at) * 1000,
            )
            backoff.died_at = None
        else:
            log.info("%s ready in %.1f ms", w, (now - w.forked_at) * 1000)
        old = w.replaces
        if old is not None:
            w.replaces = None
            self._replace_fails = 0
            if old.pid in self._workers and not old.retiring:
                self._retire(old, w.purpose, now)
        if not self._announced_ready and self._count_ready() >= self._target:
            self._announced_ready = True
            log.info("all %d worker(s) ready", self._target)
            assert self._upgrade is not None
            # After a USR2 upgrade, MAINPID moves to this master before the
            # old one is told to stop, so systemd never sees the service stop.
            if self._upgrade.old_master_pid is not None:
                self.scoreboard.master.count_upgrade()
                self.scoreboard.publish()
            self._upgrade.promote()
            sd_notify(f"READY=1\nSTATUS={self._target} workers")
            if not call_hook(self.config, "when_ready", self):
                log.error("server hook when_ready failed: stopping")
                self._exit_status = 2
                self._stop("fast")
        if self._reloading and not self._roll_candidates() and not self._replacement_booting():
            self._reloading = False
            log.info("reload complete: generation %d", self._generation)
            sd_notify("READY=1")

    # ------------------------------------------------------------------ management
    def _active(self) -> list[Worker]:
        return [w for w in self._workers.values() if not w.retiring and w.replaces is None]

    def _count_ready(self) -> int:
        return sum(1 for w in self._active() if w.ready_at is not None)

    def _replacement_booting(self) -> Worker | None:
        return next((w for w in self._workers.values() if w.replaces is not None), None)

    def _roll_candidates(self) -> list[Worker]:
        if self._roll_aborted_gen == self._generation:
            return []
        old = [w for w in self._active() if w.generation < self._generation]
        return sorted(old, key=lambda w: w.forked_at)

    def _manage(self, now: float) -> None:
        active = self._active()
        if len(active) < self._target and not (self._hold_spawns and not self._ever_ready):
            used = {w.index for w in active} | {
                w.index for w in self._workers.values() if w.replaces is not None
            }
            # The lowest free numbers. Normally those below the target are the
            # dead workers' (a replacement takes its predecessor's number, so
            # that its back-off applies and "died -> accepting" is measured);
            # a gap left by a scale-down that retired a booting worker is
            # filled first, so the numbers come back to 0..n-1.
            free = [i for i in range(len(self._workers) + self._target + 1) if i not in used]
            for index in free[: self._target - len(active)]:
                backoff = self._backoff.get(index)
                if backoff is None or now >= backoff.next_at:
                    restart = backoff is not None and backoff.died_at is not None
                    self._spawn(index, "restart" if restart else "start", now)
        elif len(active) > self._target:
            pending = {id(w.replaces) for w in self._workers.values() if w.replaces is not None}
            candidates = [w for w in active if id(w) not in pending]
            if candidates:
                self._retire(self._scale_down_choice(candidates), "scale down", now)
        if len(active) >= self._target:
            self._forget_unreplaced_crashes()
        if self._replacement_booting() is not None or now < self._replace_retry_at:
            return
        if not self._ever_ready or self._count_ready() < len(self._active()):
            return  # roll and recycle only a fully booted set
        roll = self._roll_candidates()
        if roll:
            self._spawn(roll[0].index, "reload", now, replaces=roll[0])
            return
        if self._reloading:
            self._reloading = False
            log.info("reload complete: generation %d", self._generation)
            sd_notify("READY=1")
        if any(w.retiring == "recycle" for w in self._workers.values()):
            return  # one recycle at a time, drain included
        victim = self._recycle_candidate(now)
        if victim is not None:
            self._spawn(victim.index, "recycle", now, replaces=victim)

    @staticmethod
    def _scale_down_choice(candidates: Sequence[Worker]) -> Worker:
        """The worker TTOU (or a lower ``workers`` on HUP) retires.

        A worker still booting serves nobody yet: retiring it loses no
        request and delays none, where a ready one would drop its queue of
        accepted connections into a drain. Among equals, the highest
        number, so that the workers left are numbered 0..n-1 (the task id
        hooks and metrics promise); a gap left by retiring a booting worker
        is filled by the next worker started (``_manage`` takes the lowest
        free number).
        """
        return min(candidates, key=lambda w: (w.ready_at is not None, -w.index))

    def _forget_unreplaced_crashes(self) -> None:
        """With every position filled (after a TTOU, say), a crash record whose
        number is not in use will not be replaced: a later fresh worker taking
        that number is a start, not a restart."""
        used = {w.index for w in self._workers.values()}
        for index, backoff in self._backoff.items():
            if backoff.died_at is not None and index not in used:
                backoff.died_at = None

    def _recycle_candidate(self, now: float) -> Worker | None:
        active = [w for w in self._active() if w.ready_at is not None]
        asked = [w for w in active if w.slot.recycle_requested]
        if asked:
            w = min(asked, key=lambda w: w.forked_at)
            log.info("%s reached max_requests (%d served): recycling", w, w.slot.requests)
            return w
        if self.config.max_memory <= 0:
            return None
        return self._memory.largest_over(self.config.max_memory, active, now)

    def _retire(self, w: Worker, why: str, now: float) -> None:
        log.info("retiring %s (%s)", w, why)
        w.retiring = "recycle" if why == "recycle" else why
        w.kill_at = now + self.config.graceful_timeout
        # Replaced by a new worker (reload, recycle), not gone for good.
        w.slot.set_restarting(why in ("reload", "recycle"))
        process.kill_quietly(w.pid, signal.SIGTERM)

    def _spawn(self, index: int, purpose: str, now: float, replaces: Worker | None = None) -> None:
        assert self.scoreboard is not None and self.sockets is not None
        if not self._free_slots:
            log.error("no free scoreboard slot for worker %d; will retry", index)
            self._backoff.setdefault(index, Backoff()).next_at = now + 1.0
            return
        slot = self.scoreboard.slots[self._free_slots.pop(0)]
        slot.reset(0, self._generation, index)
        limit = self.config.max_requests
        if limit > 0 and self.config.max_requests_jitter > 0:
            limit += random.randint(0, self.config.max_requests_jitter)
        ctx = WorkerContext(
            index=index,
            generation=self._generation,
            sockets=list(self.sockets),
            slot=slot,
            master_pid=self.pid,
            # (timeout 0: no hang detection, but status and top still read the heartbeat)
            heartbeat_interval=min(1.0, self.config.timeout / 4) if self.config.timeout else 1.0,
            max_requests=limit,
            graceful_timeout=self.config.graceful_timeout,
            notify_fd=self._notify_w,
            config=self.config,
            scoreboard=self.scoreboard,
        )
        call_hook(
            self.config, "pre_fork", self, WorkerView(index, self._generation, slot, self.config)
        )
        try:
            pid = process.fork_with_signals_blocked(_SIGNALS)
        except OSError as e:
            log.error("fork failed: %s; will retry", e)
            self._free_slots.append(slot.number)
            self._backoff.setdefault(index, Backoff()).next_at = now + 1.0
            return
        if pid == 0:
            self._become_worker(ctx)
        slot.set_pid(pid)
        self._forks += 1
        self.scoreboard.master.count_start(purpose)
        w = Worker(pid, index, slot, self._generation, now, purpose, replaces)
        self._workers[pid] = w
        log.info("booting %s (%s)", w, purpose)

    def _become_worker(self, ctx: WorkerContext) -> None:
        """In the child: clean up, then run the entry (and exit) or unwind to run()."""
        try:
            scoreboard._set_task_id(ctx.index)
            master_fds = [self._wake_r, self._wake_w, self._notify_r]
            if self._selector is not None:
                self._selector.close()
            if self._metrics_server is not None:
                self._metrics_server.close_in_child()
            process.after_fork_in_child(
                self._orig_handlers, master_fds, f"{self.config.proc_name}: worker {ctx.index}"
            )
            ctx.slot.set_pid(os.getpid())
            self._workers = {}
        except BaseException:
            os._exit(1)
        view = worker_view(ctx)
        call_hook(self.config, "post_fork", self, view)
        if self.worker_entry is None:
            raise _InChild(ctx)
        assert self.scoreboard is not None
        process.run_worker_entry(
            self.worker_entry,
            ctx,
            self.scoreboard,
            at_exit=lambda: call_hook(self.config, "worker_exit", self, view),
        )


def fork_workers(
    sockets: Sequence[socket.socket], workers: int | None = 0, **settings: Any
) -> WorkerContext:
    """Fork ``workers`` children supervised by a Master; return the WorkerContext in each child.

    Like tornado's ``fork_processes`` but with a real supervisor: in the
    parent this never returns (it exits when the master stops). Nothing may
    have created an event loop before the call.
    """
    return Master(sockets, workers=workers or 0, worker_entry=None, **settings).run()


#: signal -> (handler, whether it also acts while the master is stopping).
#: SIGCHLD is not here: the loop reaps children on every pass.
_SIGNAL_TABLE: dict[int, tuple[Callable[[Master], None], bool]] = {
    signal.SIGTERM: (Master._on_term, True),
    signal.SIGINT: (Master._on_fast_stop, True),
    signal.SIGQUIT: (Master._on_fast_stop, True),
    signal.SIGHUP: (Master._reload, False),
    signal.SIGTTIN: (Master._on_ttin, False),
    signal.SIGTTOU: (Master._on_ttou, False),
    signal.SIGUSR1: (Master._on_usr1, False),
    signal.SIGUSR2: (Master._on_usr2, False),
}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _ignore_in_python(signum: int, frame: object) -> None:
    """Python-level handler: nothing to do, the wakeup fd already carries the signal."""
