"""How many CPUs this process may really use, and the default number of workers.

``os.cpu_count()`` counts the CPUs of the *machine*. A pre-fork server that
forks one worker per machine CPU inside a container limited to 1.5 CPUs runs
many workers that fight over a small CPU-time budget and get throttled. Two
limits matter:

* the CPU affinity mask (``taskset``, cgroup ``cpuset``, ``--cpuset-cpus``):
  which CPUs the process may run on, from ``os.sched_getaffinity``;
* the cgroup CPU bandwidth quota (``docker --cpus``, Kubernetes
  ``limits.cpu``): how much CPU *time* per period, from cgroup v2 ``cpu.max``
  or cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``.

The usable count is ``max(1, min(affinity, ceil(quota)))``. The quota bounds
CPU-seconds, not parallelism, so for an I/O-bound server this is a sane
default, not a hard rule: ``PREFORK_WORKERS`` / ``WEB_CONCURRENCY`` (and the
CLI's ``--workers``) override it.

The cgroup files are found the way the JDK and Go's GOMAXPROCS find them:
through ``/proc/self/mountinfo``, stripping the mount's root from the path in
``/proc/self/cgroup``. Inside a container the cgroup file system is often
mounted *at* the container's own cgroup, so the naive
``/sys/fs/cgroup/cpu/<path from /proc/self/cgroup>`` does not exist.

``proc_root`` and ``sys_root`` are parameters so tests can point at fixture
directories. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "CpuQuota",
    "affinity_count",
    "cpu_quota",
    "cpu_quota_details",
    "default_workers",
    "describe_cpu_count",
    "describe_default_workers",
    "usable_cpu_count",
    "workers_from_environment",
    "WorkerVariableError",
]

#: Environment variables that set the number of workers, in order of precedence.
#: ``WEB_CONCURRENCY`` is the Heroku-era convention that gunicorn and uvicorn
#: honour and that platforms such as Heroku and Render set for you.
WORKER_ENV_VARS = ("PREFORK_WORKERS", "WEB_CONCURRENCY")


@dataclass(frozen=True)
class CpuQuota:
    """A CPU bandwidth limit found in a cgroup: ``quota_us`` per ``period_us``."""

    quota_us: int
    period_us: int
    #: The file that set it, as named in logs: ``cpu.max`` or ``cpu.cfs_quota_us``.
    source: str
    #: The cgroup directory that holds the file.
    path: str

    @property
    def cpus(self) -> float:
        """The quota in CPUs (e.g. 1.5)."""
        return self.quota_us / self.period_us

    @property
    def ceil_cpus(self) -> int:
        """The quota rounded up to whole CPUs, computed in integers (no float error)."""
        return -(-self.quota_us // self.period_us)

    def describe(self) -> str:
        return f"cgroup {self.source}={self.quota_us}/{self.period_us} -> {self.cpus:g}"


def affinity_count() -> int:
    """Number of CPUs this process may run on (its affinity mask).

    Falls back to ``os.cpu_count()`` where ``sched_getaffinity`` does not exist
    (macOS) and to 1 if even that is unknown.
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            n = len(getaffinity(0))
        except OSError:
            n = 0
        if n > 0:
            return n
    return os.cpu_count() or 1


# --------------------------------------------------------------------------
# /proc parsing


@dataclass(frozen=True)
class _Mount:
    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _parse_mountinfo(text: str) -> list[_Mount]:
    """Parse proc(5) mountinfo lines, keeping only cgroup and cgroup2 mounts.

    Format: ``id parent major:minor root mount-point options [optional...] -
    fstype source super-options``. The optional fields vary in number, so the
    line is split at the lone ``-`` separator.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep < 6 or len(fields) < sep + 3:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            _Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fstype,
                super_options=tuple(fields[sep + 3].split(",")),
            )
        )
    return mounts


def _parse_proc_cgroup(text: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Parse /proc/self/cgroup: ``hierarchy-id:controller,list:path`` per line."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        entries.append((hier, tuple(c for c in controllers.split(",") if c), path))
    return entries


def _rebase(mount_point: str, sys_root: str) -> str:
    """Map an absolute mount point under /sys onto ``sys_root`` (for fixtures)."""
    if sys_root.rstrip("/") == "/sys":
        return mount_point
    if mount_point == "/sys" or mount_point.startswith("/sys/"):
        return sys_root.rstrip("/") + mount_point[len("/sys") :]
    return mount_point


def _cgroup_dir(mount: _Mount, cgroup_path: str, sys_root: str) -> tuple[str, str]:
    """Return (mount point, this process's cgroup directory) for one hierarchy.

    The path in /proc/self/cgroup is relative to the hierarchy's root, while
    the mount may expose only a subtree (its root, field 4 of mountinfo). In a
    podman container ``/proc/self/cgroup`` says ``/libpod_parent/libpod-<id>``
    and the mount's root is that same path, so the files are at the mount
    point itself. Strip the root; if the path is not under it (a cgroup
    namespace we cannot see out of) or escapes it, use the mount point.
    """
    mount_point = _rebase(mount.mount_point, sys_root)
    root = mount.root.rstrip("/")
    if cgroup_path == root or cgroup_path.startswith(root + "/"):
        rel = cgroup_path[len(root) :].strip("/")
    else:
        rel = ""
    if rel:
        candidate = os.path.normpath(os.path.join(mount_point, rel))
        inside = candidate.startswith(mount_point.rstrip("/") + "/")
        if inside and os.path.isdir(candidate):
            return mount_point, candidate
    return mount_point, mount_point


def _dirs_up_to(leaf: str, top: str) -> Iterator[str]:
    """Yield ``leaf`` and each parent up to and including ``top``."""
    top = os.path.normpath(top)
    current = os.path.normpath(leaf)
    while True:
        yield current
        if current == top or len(current) <= len(top):
            return
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _read_cpu_max(directory: str) -> CpuQuota | None:
    """cgroup v2 ``cpu.max``: ``"max 100000"`` is no limit, ``"150000 100000"`` is 1.5."""
    text = _read_text(os.path.join(directory, "cpu.max"))
    if text is None:
        return None
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return CpuQuota(quota, period, "cpu.max", directory)


def _read_cfs(directory: str) -> CpuQuota | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; a quota of -1 is no limit."""
    quota_text = _read_text(os.path.join(directory, "cpu.cfs_quota_us"))
    period_text = _read_text(os.path.join(directory, "cpu.cfs_period_us"))
    if quota_text is None or period_text is None:
        return None
    try:
        quota = int(quota_text.strip())
        period = int(period_text.strip())
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return CpuQuota(quota, period, "cpu.cfs_quota_us", directory)


def _smallest(quotas: list[CpuQuota]) -> CpuQuota | None:
    # Compare quota_us/period_us without floats: a/b < c/d  <=>  a*d < c*b.
    best: CpuQuota | None = None
    for q in quotas:
        if best is None or q.quota_us * best.period_us < best.quota_us * q.period_us:
            best = q
    return best


def _walk_up(leaf: str, top: str, reader: Callable[[str], CpuQuota | None]) -> list[CpuQuota]:
    """Every limit from ``leaf`` up to ``top``: a parent's limit binds its children too."""
    found = []
    for directory in _dirs_up_to(leaf, top):
        q = reader(directory)
        if q is not None:
            found.append(q)
    return found


def cpu_quota_details(proc_root: str = "/proc", sys_root: str = "/sys") -> CpuQuota | None:
    """The tightest cgroup CPU quota that applies to this process, or None.

    Looks at the cgroup v2 hierarchy (``cpu.max`` in this cgroup and every
    parent: a parent's limit applies to all its children) and at the v1 ``cpu``
    controller (``cpu.cfs_*``, also walked up). On a hybrid host both may be
    mounted; the smallest limit found wins.
    """
    found: list[CpuQuota] = []
    mountinfo = _read_text(os.path.join(proc_root, "self", "mountinfo"))
    cgroup_text = _read_text(os.path.join(proc_root, "self", "cgroup"))
    mounts = _parse_mountinfo(mountinfo) if mountinfo is not None else []
    entries = _parse_proc_cgroup(cgroup_text) if cgroup_text is not None else []

    if mounts and entries:
        v2_path = next((p for h, c, p in entries if h == "0" and not c), None)
        # Match controllers as a list: "cpu" must be an element, not a substring,
        # or "cpuset" and "cpuacct" would match too.
        v1_path = next((p for _h, c, p in entries if "cpu" in c), None)
        for mount in mounts:
            if mount.fstype == "cgroup2" and v2_path is not None:
                top, leaf = _cgroup_dir(mount, v2_path, sys_root)
                found += _walk_up(leaf, top, _read_cpu_max)
            elif mount.fstype == "cgroup" and v1_path is not None and "cpu" in mount.super_options:
                top, leaf = _cgroup_dir(mount, v1_path, sys_root)
                found += _walk_up(leaf, top, _read_cfs)
    else:
        # No /proc (or no cgroup entries): try the usual mount points directly,
        # which is what a container with its own cgroup namespace shows.
        base = os.path.join(sys_root, "fs", "cgroup")
        q2 = _read_cpu_max(base)
        q1 = _read_cfs(os.path.join(base, "cpu"))
        found += [q for q in (q2, q1) if q is not None]
    return _smallest(found)


def cpu_quota(proc_root: str = "/proc", sys_root: str = "/sys") -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 1.5), or None when there is no limit."""
    q = cpu_quota_details(proc_root, sys_root)
    return q.cpus if q is not None else None


def usable_cpu_count(proc_root: str = "/proc", sys_root: str = "/sys") -> int:
    """``max(1, min(affinity, ceil(cgroup quota)))``: the CPUs this process can really use."""
    n = affinity_count()
    q = cpu_quota_details(proc_root, sys_root)
    if q is not None:
        n = min(n, q.ceil_cpus)
    return max(1, n)


def describe_cpu_count(proc_root: str = "/proc", sys_root: str = "/sys") -> str:
    """One log line that shows how the CPU-based worker count was reached.

    For example ``workers=2 (affinity=8, cgroup cpu.max=150000/100000 -> 1.5 -> 2)``.
    """
    affinity = affinity_count()
    q = cpu_quota_details(proc_root, sys_root)
    if q is None:
        return f"workers={max(1, affinity)} (affinity={affinity}, no cgroup cpu quota)"
    n = max(1, min(affinity, q.ceil_cpus))
    return f"workers={n} (affinity={affinity}, {q.describe()} -> {q.ceil_cpus})"


_WHOLE_NUMBER = re.compile(r"[0-9]+")


class WorkerVariableError(ValueError):
    """A worker-count variable (``WEB_CONCURRENCY``) that is not a whole number
    >= 1; ``variable`` and ``reason`` let the settings loader name it in
    its one line."""

    def __init__(self, variable: str, raw: str) -> None:
        self.variable = variable
        self.reason = f"must be a whole number of workers >= 1, got {raw!r}"
        super().__init__(f"{variable}: {self.reason}")


def workers_from_environment(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """The variable of :data:`WORKER_ENV_VARS` that sets the worker count, and
    its value; None when none does.  A bad value raises WorkerVariableError:
    the settings loader calls this so that ``WEB_CONCURRENCY=abc`` stops the
    start (and ``--check-config``) in one line, not only the master's run."""
    for name in WORKER_ENV_VARS:
        raw = environ.get(name)
        # An empty value (``WEB_CONCURRENCY=`` in a compose file) counts as unset.
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        if name == "PREFORK_WORKERS" and value == "0":
            continue  # (--workers 0: one per CPU, as documented; WEB_CONCURRENCY may say)
        if not _WHOLE_NUMBER.fullmatch(value) or int(value) < 1:
            raise WorkerVariableError(name, raw)
        return name, int(value)
    return None


def default_workers(
    environ: Mapping[str, str] = os.environ,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
) -> int:
    """The number of workers when ``--workers`` is not given.

    ``PREFORK_WORKERS``, then ``WEB_CONCURRENCY``, then ``usable_cpu_count()``.
    A value that is not a whole number >= 1 raises ValueError naming the
    variable, rather than being silently ignored.
    """
    from_env = workers_from_environment(environ)
    if from_env is not None:
        return from_env[1]
    return usable_cpu_count(proc_root, sys_root)


def describe_default_workers(
    environ: Mapping[str, str] = os.environ,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
) -> str:
    """Like ``describe_cpu_count`` but naming the environment variable when one decided."""
    from_env = workers_from_environment(environ)
    if from_env is not None:
        name, n = from_env
        return f"workers={n} (from {name})"
    return describe_cpu_count(proc_root, sys_root)
