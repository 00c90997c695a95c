"""--user / --group / --umask / --unix-socket-mode through the real CLI (issue 4, item 7).

What it proves:

* As root, ``--bind 127.0.0.1:81 --user nobody``: the master (which bound the
  privileged port) stays root, every worker runs as nobody -- real, effective
  and saved uid and gid, no supplementary group of root's -- and requests
  succeed; the application itself reports nobody's uid.  The unix socket
  bound beside it has ``--unix-socket-mode 660`` and belongs to nobody:nogroup,
  so the workers (and a proxy in that group) can use it; ``--umask 027`` is
  the umask of the master and of every worker.
* A worker whose root master is SIGKILLed exits too: the parent-death signal
  survives the switch to nobody.
* ``--user`` naming no user is a usage error: exit 2, one line.
* Without root: ``--bind unix:PATH --unix-socket-mode 660`` gives that mode
  (and the default is 600).

The interpreter used for the privilege drop must be readable by nobody.  On
this machine the default one lives under /root (mode 700), so those tests
run prefork from a copy of its source with Debian's /usr/bin/python3; one more
test runs the usual interpreter to show that prefork imports nothing of its
own after the switch.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import proxy_harness as h  # noqa: E402

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (binds port 81, switches user)")


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' here")
    return entry.pw_uid, entry.pw_gid


def _privileged_port() -> int:
    """A free port below 1024 on 127.0.0.1 (81 unless taken)."""
    for port in range(81, 100):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 81-99 on 127.0.0.1")


def _readable_by(uid: int, gid: int, paths: list[str]) -> bool:
    """Whether ``uid``/``gid`` may read every path (checked in a forked child)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            ok = all(os.access(p, os.R_OK) for p in paths)
        finally:
            os._exit(0 if ok else 1)  # noqa: B012
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def sandbox():
    """A 755 folder holding the app (and, on demand, a copy of prefork's source)."""
    path = h.private_dir("pf-priv-")
    shutil.copy(h.APPS / "proxy_echo.py", path / "proxy_echo.py")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _interpreter_for_nobody(sandbox: Path) -> tuple[str, Path]:
    """(python, source dir) that nobody can read: a copy of prefork, a world-readable python."""
    uid, gid = _nobody()
    source = sandbox / "src"
    shutil.copytree(
        h.ROOT / "prefork", source / "prefork", ignore=shutil.ignore_patterns("__pycache__")
    )
    candidates = [sys.executable, "/usr/bin/python3"]
    for python in candidates:
        probe = subprocess.run(
            [python, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['stdlib'])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode != 0:
            continue
        stdlib = probe.stdout.strip()
        paths = [python, stdlib, os.path.join(stdlib, "concurrent", "futures", "thread.py")]
        if _readable_by(uid, gid, [os.path.realpath(p) for p in paths]):
            return python, source
    pytest.skip(f"no Python interpreter readable by nobody among {candidates}")


def _umask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    pytest.skip("/proc/PID/status has no Umask line on this kernel")


def _groups(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:]}
    return set()


@root_only
def test_privileged_port_as_root_workers_run_as_nobody(sandbox: Path, procs: list) -> None:
    uid, gid = _nobody()
    python, source = _interpreter_for_nobody(sandbox)
    port = _privileged_port()
    sock_path = sandbox / "prefork.sock"
    server = h.Prefork(
        [
            "--bind",
            f"127.0.0.1:{port}",
            "--bind",
            f"unix:{sock_path}",
            "--unix-socket-mode",
            "660",
            "--user",
            "nobody",
            "--umask",
            "027",
        ],
        sandbox,
        app_dir=sandbox,
        workers=2,
        python=python,
        source_dir=source,
    )
    procs.append(server)

    master = psutil.Process(server.pid)
    assert tuple(master.uids()) == (0, 0, 0)
    workers = server.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        worker = psutil.Process(pid)
        assert tuple(worker.uids()) == (uid, uid, uid), pid
        assert tuple(worker.gids()) == (gid, gid, gid), pid
        assert 0 not in _groups(pid), (pid, _groups(pid))
        assert _umask(pid) == 0o027
    assert _umask(server.pid) == 0o027

    # Requests succeed on the privileged port, answered by code running as nobody.
    seen_pids = set()
    for _ in range(8):
        seen = h.curl_json(f"http://127.0.0.1:{port}/who")
        assert (seen["uid"], seen["euid"], seen["gid"]) == (uid, uid, gid), seen
        seen_pids.add(seen["pid"])
    assert seen_pids <= set(workers)

    # The unix socket: the mode asked for, owned by the workers' user and group.
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660, oct(info.st_mode)
    assert (info.st_uid, info.st_gid) == (uid, gid)
    seen = h.curl_json("--unix-socket", sock_path, "http://localhost/over-unix")
    assert seen["uid"] == uid


@root_only
def test_workers_of_a_killed_root_master_exit(sandbox: Path, procs: list) -> None:
    """PR_SET_PDEATHSIG is cleared by setuid(): prefork sets it after the switch."""
    python, source = _interpreter_for_nobody(sandbox)
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", "--user", "nobody"],
        sandbox,
        app_dir=sandbox,
        workers=2,
        python=python,
        source_dir=source,
    )
    procs.append(server)
    workers = [psutil.Process(pid) for pid in server.worker_pids()]
    assert len(workers) == 2
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived their master: {alive}"


@root_only
def test_user_switch_with_an_interpreter_the_user_cannot_read(sandbox: Path, procs: list) -> None:
    """Only the application should need to be readable by --user.

    The application here imports nothing, so any import after the switch is
    prefork's own.  Skipped where nobody can read this interpreter anyway.
    """
    uid, gid = _nobody()
    import concurrent.futures

    stdlib_file = os.path.join(os.path.dirname(concurrent.futures.__file__), "thread.py")
    if _readable_by(uid, gid, [os.path.realpath(sys.executable), stdlib_file]):
        pytest.skip("nobody can read this interpreter: nothing to show here")
    (sandbox / "proxy_bare.py").write_text(
        "def app(request):\n"
        "    request.write(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n"
        "    request.finish()\n"
    )
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", "--user", "nobody"],
        sandbox,
        app="proxy_bare:app",
        app_dir=sandbox,
        workers=1,
        wait_ready=False,
    )
    procs.append(server)
    server.wait_ready(20)
    result = h.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{server.port}/"])
    assert result.stdout == "ok"


def test_unknown_user_is_a_usage_error(tmp_path: Path) -> None:
    result = h.run(
        [sys.executable, "-m", "prefork", "--user", "no-such-user-here", "proxy_echo:app"],
        cwd=h.APPS,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--user" in lines[0] and "no-such-user-here" in lines[0], lines


@pytest.mark.parametrize(
    ("mode", "expected"), [("660", 0o660), (None, 0o600)], ids=["mode-660", "default-600"]
)
def test_unix_socket_mode(tmp_path: Path, procs: list, mode: str | None, expected: int) -> None:
    sock_path = tmp_path / "prefork.sock"
    args = ["--bind", f"unix:{sock_path}"] + (["--unix-socket-mode", mode] if mode else [])
    server = h.Prefork(args, tmp_path, workers=1)
    procs.append(server)
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == expected, oct(info.st_mode)
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    seen = h.curl_json("--unix-socket", sock_path, "http://localhost/x")
    assert seen["by"] == "app"
