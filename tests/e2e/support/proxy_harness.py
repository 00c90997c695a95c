"""Processes for the proxy, TLS and privilege e2e tests: prefork, nginx, HAProxy, netns.

Every process started here runs in the foreground with its output in files
under a test's own folder, is stopped by its pid (TERM, a bounded wait, then
KILL) and is reaped.  nginx and HAProxy run from a config written into that
folder (pid, logs and temp paths there too), never as the system service.
The deploy files are used as they are, with only their placeholder addresses
and ports replaced; a replacement that finds nothing fails the test, so the
test and the deploy file cannot drift apart silently.

Network namespaces are made and deleted by :class:`Netns`; the addresses in
them are private ones that exist only inside those namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[3]
APPS = ROOT / "tests" / "apps"
DEPLOY = ROOT / "deploy"
SUPPORT = Path(__file__).resolve().parent

STOP_TIMEOUT = 10.0

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def connects(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``host``:``port`` now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def replace_once(text: str, old: str, new: str, *, count: int = 1) -> str:
    """``text.replace(old, new)``, asserting that ``old`` occurs ``count`` times."""
    found = text.count(old)
    assert found == count, f"expected {count} x {old!r} in the deploy file, found {found}"
    return text.replace(old, new)


def private_dir(prefix: str) -> Path:
    """A fresh folder under /tmp that other users may traverse (mode 755).

    For what an unprivileged process must reach: nginx's workers (nobody),
    prefork workers after ``--user nobody``.  pytest's tmp_path is 700.
    """
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class Proc:
    """A foreground process with stdout/stderr in files, stopped by pid."""

    def __init__(
        self,
        argv: Sequence[str],
        log_dir: Path,
        name: str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=env,
            cwd=cwd,
        )
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal by pid, wait with a bound, SIGKILL if still there; return the status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.returncode = self.proc.returncode
        for handle in (self._out, self._err):
            if not handle.closed:
                handle.close()
        return self.returncode

    def describe(self) -> str:
        return (
            f"--- {self.name} {' '.join(self.argv)} (status {self.proc.poll()}) ---\n"
            f"stdout:\n{self.stdout()[-4000:]}\nstderr:\n{self.stderr()[-8000:]}"
        )


class Prefork(Proc):
    """``python -m prefork [ARGS] APP`` (optionally inside a network namespace).

    Waits for the master's "all N worker(s) ready" line.  ``stop()`` also
    kills, by pid, any worker that outlived its master.
    """

    def __init__(
        self,
        args: Sequence[object],
        log_dir: Path,
        *,
        name: str = "prefork",
        app: str = "proxy_echo:app",
        workers: int = 2,
        netns: str | None = None,
        app_dir: Path = APPS,
        cwd: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
        wait_ready: bool = True,
        python: str = sys.executable,
        source_dir: Path = ROOT,
    ) -> None:
        """``python``/``source_dir``: the interpreter, and where ``import prefork`` is found."""
        self.workers = workers
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [*prefix, python, "-m", "prefork", "-w", str(workers)]
        argv += [str(a) for a in args] + [app]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(app_dir), str(source_dir), env.get("PYTHONPATH", "")) if p
        )
        for key in [k for k in env if k.startswith("PREFORK_")]:
            del env[key]
        env.pop("NOTIFY_SOCKET", None)
        env.pop("LISTEN_FDS", None)
        super().__init__(argv, log_dir, name, env=env, cwd=cwd or app_dir)
        self._known_workers: dict[int, float] = {}
        if wait_ready:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prefork exited before it was ready\n{self.describe()}")
            return f"all {self.workers} worker(s) ready" in self.stderr()

        try:
            wait_for(ready, timeout, "prefork to report its workers ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None
        self.worker_pids()

    @property
    def addresses(self) -> list[str]:
        """What the master says it listens on (``http://127.0.0.1:PORT``, ``unix:PATH``)."""
        match = re.search(r"listening on (.*), \d+ worker", self.stderr())
        assert match, f"no 'listening on' line\n{self.describe()}"
        return [a.strip() for a in match.group(1).split(", ")]

    @property
    def port(self) -> int:
        for address in self.addresses:
            match = re.match(r"https?://.*:(\d+)$", address)
            if match:
                return int(match.group(1))
        raise AssertionError(f"no TCP listener in {self.addresses}")

    def worker_pids(self) -> list[int]:
        """Live worker pids (children of the master), remembered for stop()."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                self._known_workers[child.pid] = child.create_time()
                pids.append(child.pid)
        return sorted(pids)

    def hup_and_wait(self, generation: int, timeout: float = 30.0) -> None:
        """SIGHUP the master and wait for its "reload complete: generation N" line."""
        self.send_signal(signal.SIGHUP)
        wait_for(
            lambda: f"reload complete: generation {generation}" in self.stderr(),
            timeout,
            f"reload to generation {generation}",
        )
        self.worker_pids()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        self.worker_pids()
        status = super().stop(sig, timeout)
        for pid, created in self._known_workers.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.kill()
                    with contextlib.suppress(psutil.TimeoutExpired):
                        proc.wait(STOP_TIMEOUT)
        return status


# -- nginx ---------------------------------------------------------------------------------

NGINX_DEPLOY = DEPLOY / "nginx" / "prefork.conf"


def nginx_site(*, listen_port: int, unix_socket: str | None, tcp_port: int | None) -> str:
    """deploy/nginx/prefork.conf with its addresses replaced.

    ``unix_socket`` set: ``proxy_pass`` to the unix upstream (the file's
    default); else to the TCP upstream on ``127.0.0.1:tcp_port``.
    """
    text = NGINX_DEPLOY.read_text()
    text = replace_once(
        text,
        "server unix:/run/prefork/prefork.sock",
        f"server unix:{unix_socket or '/nonexistent/prefork.sock'}",
    )
    text = replace_once(text, "server 127.0.0.1:8000", f"server 127.0.0.1:{tcp_port or 9}")
    text = re.sub(r"(?m)^(\s*listen) 80\b", rf"\1 127.0.0.1:{listen_port}", text)
    assert text.count(f"listen 127.0.0.1:{listen_port}") == 2, text
    if unix_socket is None:
        text = replace_once(text, "proxy_pass http://prefork;", "proxy_pass http://prefork_tcp;")
    return text


class Nginx(Proc):
    """nginx in the foreground from a prefix folder holding everything it writes."""

    def __init__(self, prefix: Path, site: str, *, name: str = "nginx") -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "prefork.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"""
daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    include {prefix}/prefork.conf;
}}
"""
        )
        self.prefix = prefix
        check = subprocess.run(
            ["nginx", "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        self.check_output = check.stderr
        super().__init__(
            ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], prefix, name
        )

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = STOP_TIMEOUT) -> int:
        return super().stop(sig, timeout)


# -- HAProxy -------------------------------------------------------------------------------

HAPROXY_DEPLOY = DEPLOY / "haproxy" / "haproxy.cfg"
#: the placeholder servers of the deploy file: (backend, server) -> address
HAPROXY_SERVERS = {
    ("be_prefork", "host1"): "192.0.2.11:8000",
    ("be_prefork", "host2"): "192.0.2.12:8000",
    ("li_prefork_proxy_v2", "host1"): "192.0.2.11:8001",
    ("li_prefork_proxy_v2", "host2"): "192.0.2.12:8001",
}


def haproxy_config(
    *,
    http_binds: Iterable[str],
    proxy_v2_binds: Iterable[str],
    servers: dict[tuple[str, str], str],
    stats_socket: Path,
) -> str:
    """deploy/haproxy/haproxy.cfg with its binds and server addresses replaced."""
    text = HAPROXY_DEPLOY.read_text()
    for key, placeholder in HAPROXY_SERVERS.items():
        text = replace_once(text, f" {placeholder} check", f" {servers[key]} check")
    text = replace_once(text, "    bind :8080\n", "".join(f"    bind {b}\n" for b in http_binds))
    text = replace_once(
        text, "    bind :8081\n", "".join(f"    bind {b}\n" for b in proxy_v2_binds)
    )
    text = replace_once(
        text,
        "\nglobal\n",
        f"\nglobal\n    stats socket {stats_socket} mode 600 level admin\n",
    )
    # Nothing may still point at a placeholder (never send traffic there).
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "192.0.2." not in live, live
    return text


class HAProxy(Proc):
    """HAProxy in the foreground (``-db``), with a stats socket in its folder.

    It runs deploy/haproxy/haproxy.cfg with the binds and servers given, or
    ``config``: a configuration of the test's own (the stats socket is added
    to its ``global`` section).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        http_binds: Iterable[str] = (),
        proxy_v2_binds: Iterable[str] = (),
        servers: dict[tuple[str, str], str] | None = None,
        config: str | None = None,
        netns: str | None = None,
        name: str = "haproxy",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stats_socket = workdir / "haproxy-admin.sock"
        cfg = workdir / "haproxy.cfg"
        if config is None:
            assert servers is not None, "servers are needed for the deploy file"
            config = haproxy_config(
                http_binds=http_binds,
                proxy_v2_binds=proxy_v2_binds,
                servers=servers,
                stats_socket=self.stats_socket,
            )
        else:
            stats = f"\nglobal\n    stats socket {self.stats_socket} mode 600 level admin\n"
            config = replace_once(config, "\nglobal\n", stats)
        cfg.write_text(config)
        check = subprocess.run(
            ["haproxy", "-dW", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        prefix = ["ip", "netns", "exec", netns] if netns else []
        super().__init__([*prefix, "haproxy", "-db", "-f", str(cfg)], workdir, name)
        wait_for(
            lambda: self._alive_or_fail() and self.stats_socket.exists(),
            10,
            "HAProxy's stats socket",
        )

    def _alive_or_fail(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"HAProxy exited\n{self.describe()}")
        return True

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[tuple[str, str], str]:
        """(backend, server) -> status ("UP", "DOWN", "UP 1/2", "NOLB", ...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row["svname"] not in ("FRONTEND", "BACKEND"):
                states[(row["pxname"], row["svname"])] = row["status"]
        return states

    def wait_servers(self, state: str, keys: Iterable[tuple[str, str]], timeout: float = 15.0):
        keys = list(keys)
        return wait_for(
            lambda: all(self.server_states().get(k) == state for k in keys),
            timeout,
            f"HAProxy servers {keys} to be {state} (now {self.server_states()})",
            interval=0.1,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        return super().stop(sig, timeout)


# -- network namespaces --------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=15)


class Netns:
    """Namespaces joined by veth pairs, made for one test and deleted after it.

    ``link(a, b, addr_a, addr_b)`` makes a veth pair with one end in each
    namespace, both ends up, with the given ``ADDRESS/PREFIX``.  Nothing is
    created in the root namespace; deleting a namespace deletes its veth ends.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.names: list[str] = []
        self._links = 0
        self._run_netns_was_mounted = _is_mountpoint("/run/netns")

    def add(self, short: str) -> str:
        name = f"pf{self.tag}{short}"
        _ip("netns", "add", name)
        self.names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, ns_a: str, ns_b: str, addr_a: str, addr_b: str) -> None:
        self._links += 1
        end_a = f"pf{self.tag}v{self._links}a"[:15]
        end_b = f"pf{self.tag}v{self._links}b"[:15]
        _ip(
            "link",
            "add",
            end_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            end_b,
            "netns",
            ns_b,
        )
        _ip("-n", ns_a, "addr", "add", addr_a, "dev", end_a)
        _ip("-n", ns_b, "addr", "add", addr_b, "dev", end_b)
        _ip("-n", ns_a, "link", "set", end_a, "up")
        _ip("-n", ns_b, "link", "set", end_b, "up")

    def delete(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
        self.names = []
        # `ip netns add` bind-mounts /run/netns; undo that if we caused it.
        if (
            not self._run_netns_was_mounted
            and _is_mountpoint("/run/netns")
            and not os.listdir("/run/netns")
        ):
            subprocess.run(["umount", "/run/netns"], capture_output=True, timeout=15)


def _is_mountpoint(path: str) -> bool:
    # os.path.ismount misses a bind mount of a folder onto itself (same device).
    try:
        with open("/proc/self/mountinfo") as mounts:
            return any(line.split()[4] == path for line in mounts)
    except OSError:
        return os.path.ismount(path)


def netns_usable() -> str | None:
    """None when ``ip netns add`` works here, else why not (PF_E2E_NO_NETNS=1: pretend not)."""
    if os.environ.get("PF_E2E_NO_NETNS"):
        return "PF_E2E_NO_NETNS is set"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = Netns(f"probe{os.getpid() % 100000}")
    try:
        probe.add("x")
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"ip netns add failed: {detail.strip()}"
    finally:
        probe.delete()
    return None


# -- small clients -------------------------------------------------------------------------


def run(argv: Sequence[str], timeout: float = 30.0, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a client program to completion, bounded by ``timeout``."""
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def curl_json(*args: object, timeout: float = 20.0) -> dict:
    """``curl -sS ARGS``: the JSON body of a 200 answer (fails the test otherwise)."""
    result = run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args], timeout)
    assert result.returncode == 0, f"curl {args}: rc {result.returncode}: {result.stderr}"
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", f"curl {args}: status {status}: {body}"
    return json.loads(body)


def raw_exchange(
    host: str,
    port: int,
    data: bytes,
    *,
    source: str | None = None,
    family: int = socket.AF_INET,
    timeout: float = 5.0,
) -> bytes:
    """Send ``data`` on a new connection, half-close, return all bytes until EOF.

    A connection the server closes or resets without answering gives ``b""``.
    """
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        received = b""
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            # The server closed (or reset) first: fine, what matters is what it sent.
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
        return received


def http_body(response: bytes) -> tuple[int, bytes]:
    """(status, body) of one raw HTTP/1.1 response with a Content-Length."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body
