"""Usable CPU count from affinity and cgroup quotas, against fixture /proc and /sys trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefork import cpus
from prefork.cpus import (
    cpu_quota,
    cpu_quota_details,
    default_workers,
    describe_cpu_count,
    describe_default_workers,
    usable_cpu_count,
)

V2_MOUNT = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
    "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot"
)
ROOT_MOUNT = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"


def v1_mount(mount_point: str, options: str, root: str = "/") -> str:
    return f"40 31 0:29 {root} {mount_point} rw,nosuid,nodev - cgroup cgroup rw,{options}"


class Tree:
    """A fake /proc and /sys under tmp_path."""

    def __init__(self, base: Path, cgroup: str, mountinfo: list[str]) -> None:
        self.proc = base / "proc"
        self.sys = base / "sys"
        (self.proc / "self").mkdir(parents=True)
        self.sys.mkdir()
        (self.proc / "self" / "cgroup").write_text(cgroup + "\n")
        (self.proc / "self" / "mountinfo").write_text("\n".join(mountinfo) + "\n")

    def write(self, rel: str, content: str) -> None:
        path = self.sys / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")

    @property
    def roots(self) -> dict[str, str]:
        return {"proc_root": str(self.proc), "sys_root": str(self.sys)}


@pytest.fixture
def affinity(monkeypatch: pytest.MonkeyPatch):
    def set_affinity(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    set_affinity(8)
    return set_affinity


# ---------------------------------------------------------------- cgroup v2


def test_v2_max_means_no_quota(tmp_path: Path, affinity) -> None:
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "max 100000")
    assert cpu_quota(**tree.roots) is None
    assert usable_cpu_count(**tree.roots) == 8
    assert describe_cpu_count(**tree.roots) == "workers=8 (affinity=8, no cgroup cpu quota)"


def test_v2_quota(tmp_path: Path, affinity) -> None:
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "150000 100000")
    assert cpu_quota(**tree.roots) == 1.5
    assert usable_cpu_count(**tree.roots) == 2
    assert describe_cpu_count(**tree.roots) == (
        "workers=2 (affinity=8, cgroup cpu.max=150000/100000 -> 1.5 -> 2)"
    )


def test_v2_nested_parents_take_the_minimum(tmp_path: Path, affinity) -> None:
    tree = Tree(tmp_path, "0::/a/b/c", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/a/cpu.max", "50000 100000")  # the tightest, two levels up
    tree.write("fs/cgroup/a/b/cpu.max", "max 100000")
    tree.write("fs/cgroup/a/b/c/cpu.max", "300000 100000")
    details = cpu_quota_details(**tree.roots)
    assert details is not None
    assert details.cpus == 0.5
    assert details.path == str(tree.sys / "fs/cgroup/a")
    assert usable_cpu_count(**tree.roots) == 1


def test_v2_quota_below_one_cpu_still_gives_one_worker(tmp_path: Path, affinity) -> None:
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "10000 100000")
    assert cpu_quota(**tree.roots) == 0.1
    assert usable_cpu_count(**tree.roots) == 1


def test_v2_ceil_uses_integers(tmp_path: Path, affinity) -> None:
    # 300000/100000 must be exactly 3, and 300001/100000 rounds up to 4.
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "300000 100000")
    assert usable_cpu_count(**tree.roots) == 3
    tree.write("fs/cgroup/app/cpu.max", "300001 100000")
    assert usable_cpu_count(**tree.roots) == 4


def test_v2_cgroup_namespace_root(tmp_path: Path, affinity) -> None:
    # Inside a cgroup namespace /proc/self/cgroup says "/" and the files are at the mount point.
    tree = Tree(tmp_path, "0::/", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/cpu.max", "200000 100000")
    assert cpu_quota(**tree.roots) == 2.0


def test_malformed_cpu_max_is_ignored(tmp_path: Path, affinity) -> None:
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "garbage here")
    assert cpu_quota(**tree.roots) is None
    assert usable_cpu_count(**tree.roots) == 8


# ---------------------------------------------------------------- cgroup v1


def test_v1_quota_minus_one_means_no_quota(tmp_path: Path, affinity) -> None:
    tree = Tree(
        tmp_path,
        "4:cpu,cpuacct:/svc",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct")],
    )
    tree.write("fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "-1")
    tree.write("fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) is None
    assert usable_cpu_count(**tree.roots) == 8


def test_v1_half_cpu(tmp_path: Path, affinity) -> None:
    tree = Tree(
        tmp_path,
        "4:cpu,cpuacct:/svc",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct")],
    )
    tree.write("fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "50000")
    tree.write("fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) == 0.5
    assert usable_cpu_count(**tree.roots) == 1
    assert describe_cpu_count(**tree.roots) == (
        "workers=1 (affinity=8, cgroup cpu.cfs_quota_us=50000/100000 -> 0.5 -> 1)"
    )


def test_v1_podman_nested_root(tmp_path: Path, affinity) -> None:
    # deploy.md 2.5: /proc/self/cgroup names /libpod_parent/libpod-<id>, but the cpu
    # hierarchy is mounted *at* that cgroup, so the files are at the mount point and
    # /sys/fs/cgroup/cpu/libpod_parent/... does not exist.
    cg = "/libpod_parent/libpod-0123abcd"
    tree = Tree(
        tmp_path,
        f"2:cpuacct:{cg}\n1:cpu:{cg}\n0::/",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/cpu", "cpu", root=cg)],
    )
    tree.write("fs/cgroup/cpu/cpu.cfs_quota_us", "150000")
    tree.write("fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    assert not (tree.sys / "fs/cgroup/cpu/libpod_parent").exists()
    assert cpu_quota(**tree.roots) == 1.5
    assert usable_cpu_count(**tree.roots) == 2


def test_v1_nested_root_with_deeper_path(tmp_path: Path, affinity) -> None:
    # The process sits in a child of the mount's root: strip the root, keep the rest.
    tree = Tree(
        tmp_path,
        "1:cpu:/kubepods/pod1/ctr",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/cpu", "cpu", root="/kubepods/pod1")],
    )
    tree.write("fs/cgroup/cpu/ctr/cpu.cfs_quota_us", "250000")
    tree.write("fs/cgroup/cpu/ctr/cpu.cfs_period_us", "100000")
    tree.write("fs/cgroup/cpu/cpu.cfs_quota_us", "-1")
    tree.write("fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) == 2.5


def test_v1_controller_list_is_matched_exactly(tmp_path: Path, affinity) -> None:
    # "cpuset" and "cpuacct" contain the substring "cpu" but are not the cpu controller.
    tree = Tree(
        tmp_path,
        "3:cpuset:/svc\n2:cpuacct:/svc",
        [
            ROOT_MOUNT,
            v1_mount("/sys/fs/cgroup/cpuset", "cpuset"),
            v1_mount("/sys/fs/cgroup/cpuacct", "cpuacct"),
        ],
    )
    for ctrl in ("cpuset", "cpuacct"):
        tree.write(f"fs/cgroup/{ctrl}/svc/cpu.cfs_quota_us", "10000")
        tree.write(f"fs/cgroup/{ctrl}/svc/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) is None
    assert usable_cpu_count(**tree.roots) == 8


def test_v1_cgroup_path_comes_from_the_cpu_line_not_cpuset(tmp_path: Path, affinity) -> None:
    # The cpuset line and mount come first; a substring match would take their path
    # or read the decoy files in the cpuset hierarchy.
    tree = Tree(
        tmp_path,
        "3:cpuset:/wrong\n2:cpuacct:/wrong\n1:cpu:/right",
        [
            ROOT_MOUNT,
            v1_mount("/sys/fs/cgroup/cpuset", "cpuset"),
            v1_mount("/sys/fs/cgroup/cpuacct", "cpuacct"),
            v1_mount("/sys/fs/cgroup/cpu", "cpu"),
        ],
    )
    for ctrl in ("cpuset", "cpuacct"):
        tree.write(f"fs/cgroup/{ctrl}/right/cpu.cfs_quota_us", "10000")
        tree.write(f"fs/cgroup/{ctrl}/right/cpu.cfs_period_us", "100000")
    tree.write("fs/cgroup/cpu/wrong/cpu.cfs_quota_us", "50000")
    tree.write("fs/cgroup/cpu/wrong/cpu.cfs_period_us", "100000")
    tree.write("fs/cgroup/cpu/right/cpu.cfs_quota_us", "200000")
    tree.write("fs/cgroup/cpu/right/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) == 2.0


def test_v1_cpu_in_a_combined_controller_list(tmp_path: Path, affinity) -> None:
    tree = Tree(
        tmp_path,
        "3:cpuset,cpu:/svc",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/cpuset,cpu", "cpuset,cpu")],
    )
    tree.write("fs/cgroup/cpuset,cpu/svc/cpu.cfs_quota_us", "300000")
    tree.write("fs/cgroup/cpuset,cpu/svc/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) == 3.0
    assert usable_cpu_count(**tree.roots) == 3


def test_hybrid_takes_the_smaller_of_v1_and_v2(tmp_path: Path, affinity) -> None:
    tree = Tree(
        tmp_path,
        "1:cpu:/svc\n0::/svc",
        [
            ROOT_MOUNT,
            v1_mount("/sys/fs/cgroup/cpu", "cpu"),
            V2_MOUNT.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified "),
        ],
    )
    tree.write("fs/cgroup/cpu/svc/cpu.cfs_quota_us", "400000")
    tree.write("fs/cgroup/cpu/svc/cpu.cfs_period_us", "100000")
    tree.write("fs/cgroup/unified/svc/cpu.max", "200000 100000")
    assert cpu_quota(**tree.roots) == 2.0


def test_escaped_mount_point(tmp_path: Path, affinity) -> None:
    # mountinfo writes a space in a path as \040.
    tree = Tree(
        tmp_path,
        "1:cpu:/",
        [ROOT_MOUNT, v1_mount("/sys/fs/cgroup/my\\040cpu", "cpu")],
    )
    tree.write("fs/cgroup/my cpu/cpu.cfs_quota_us", "100000")
    tree.write("fs/cgroup/my cpu/cpu.cfs_period_us", "100000")
    assert cpu_quota(**tree.roots) == 1.0


def test_no_proc_falls_back_to_sys_fs_cgroup(tmp_path: Path, affinity) -> None:
    sys_root = tmp_path / "sys"
    (sys_root / "fs/cgroup").mkdir(parents=True)
    (sys_root / "fs/cgroup/cpu.max").write_text("250000 100000\n")
    roots = {"proc_root": str(tmp_path / "no-proc"), "sys_root": str(sys_root)}
    assert cpu_quota(**roots) == 2.5
    assert usable_cpu_count(**roots) == 3


def test_nothing_found_means_no_quota(tmp_path: Path, affinity) -> None:
    roots = {"proc_root": str(tmp_path / "p"), "sys_root": str(tmp_path / "s")}
    assert cpu_quota(**roots) is None
    assert usable_cpu_count(**roots) == 8


# ---------------------------------------------------------------- affinity


def test_affinity_smaller_than_quota(tmp_path: Path, affinity) -> None:
    affinity(2)
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "400000 100000")
    assert cpu_quota(**tree.roots) == 4.0
    assert usable_cpu_count(**tree.roots) == 2
    assert describe_cpu_count(**tree.roots) == (
        "workers=2 (affinity=2, cgroup cpu.max=400000/100000 -> 4 -> 4)"
    )


def test_affinity_fallback_to_cpu_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    roots = {"proc_root": str(tmp_path / "p"), "sys_root": str(tmp_path / "s")}
    assert cpus.affinity_count() == 3
    assert usable_cpu_count(**roots) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpu_count(**roots) == 1


def test_real_host_is_sane() -> None:
    n = usable_cpu_count()
    assert 1 <= n <= cpus.affinity_count()
    assert describe_cpu_count().startswith(f"workers={n} (affinity=")


# ---------------------------------------------------------------- default_workers


@pytest.fixture
def quota_tree(tmp_path: Path, affinity) -> dict[str, str]:
    tree = Tree(tmp_path, "0::/app", [ROOT_MOUNT, V2_MOUNT])
    tree.write("fs/cgroup/app/cpu.max", "150000 100000")
    return tree.roots


def test_default_workers_precedence(quota_tree: dict[str, str]) -> None:
    both = {"PREFORK_WORKERS": "3", "WEB_CONCURRENCY": "5"}
    assert default_workers(both, **quota_tree) == 3
    assert default_workers({"WEB_CONCURRENCY": "5"}, **quota_tree) == 5
    assert default_workers({}, **quota_tree) == 2
    assert describe_default_workers(both, **quota_tree) == "workers=3 (from PREFORK_WORKERS)"
    assert describe_default_workers({}, **quota_tree).startswith("workers=2 (affinity=8, cgroup")


def test_default_workers_empty_value_counts_as_unset(quota_tree: dict[str, str]) -> None:
    assert default_workers({"PREFORK_WORKERS": "", "WEB_CONCURRENCY": "4"}, **quota_tree) == 4
    assert default_workers({"WEB_CONCURRENCY": "  "}, **quota_tree) == 2
    assert default_workers({"PREFORK_WORKERS": " 6 "}, **quota_tree) == 6


def test_prefork_workers_0_is_one_per_cpu_as_workers_0(quota_tree: dict[str, str]) -> None:
    """The settings table says 0 is one per usable CPU: PREFORK_WORKERS=0
    said so too, then this refused it ('must be >= 1'), exit 2."""
    assert default_workers({"PREFORK_WORKERS": "0"}, **quota_tree) == 2
    assert default_workers({"PREFORK_WORKERS": "0", "WEB_CONCURRENCY": "4"}, **quota_tree) == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (name, value)
        for name in ("PREFORK_WORKERS", "WEB_CONCURRENCY")
        for value in ("abc", "0", "-1", "2.5", "1e3", "+2", "4 workers", "٣")
        if (name, value) != ("PREFORK_WORKERS", "0")  # (the setting's own 0: above)
    ],
)
def test_default_workers_bad_values(name: str, value: str, quota_tree: dict[str, str]) -> None:
    with pytest.raises(ValueError) as info:
        default_workers({name: value}, **quota_tree)
    assert str(info.value).startswith(f"{name}: ")
    assert repr(value) in str(info.value)
    assert ">= 1" in str(info.value)


def test_bad_prefork_workers_is_not_skipped_for_web_concurrency(
    quota_tree: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match="PREFORK_WORKERS"):
        default_workers({"PREFORK_WORKERS": "many", "WEB_CONCURRENCY": "4"}, **quota_tree)
