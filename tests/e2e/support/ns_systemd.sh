#!/bin/bash
# Boot a real systemd as PID 1 of private pid, mount, net, uts, ipc and cgroup
# namespaces, for tests/e2e/test_systemd.py (docs: shared/reference/deploy.md 1.6).
#
#   ns_systemd.sh host WORKDIR CGROUP_NAME [TTY]   (root; execs the boot half)
#
# WORKDIR/units/ holds the unit files to install (and their .d drop-ins).
# systemd logs to /dev/console only if it is a terminal: TTY (a pty whose
# other end the caller reads) is bound there; without it, an empty file is,
# so that nothing reaches the host's console.
#
# Isolation, because a systemd that behaves as on a real boot changes the
# HOST (its /tmp, /etc, /var/log and kernel settings are shared with it):
#  * cgroups: this shell first moves itself into fresh cgroups
#    /sys/fs/cgroup/{unified,systemd}/CGROUP_NAME, which become the root of
#    the new cgroup namespace; the boot half mounts a PRIVATE tmpfs on
#    /sys/fs/cgroup (never remounting the host's);
#  * /run and /etc/systemd/system are private tmpfs: host-enabled units are
#    invisible;
#  * EVERY unit file that systemd ships is masked (a /dev/null symlink in
#    /run/systemd/system), except slices: nothing can start but the test's
#    units. Without this, a unit with default dependencies pulls in
#    sysinit.target, whose systemd-tmpfiles-setup.service empties the host's
#    /tmp, and systemd-sysctl/-binfmt/-sysusers/-journal-flush write to the
#    host's kernel settings, /etc and /var/log. The test units also set
#    DefaultDependencies=no;
#  * the network namespace has only lo.
# Stop it by killing this PID 1 (SIGKILL from the host ends every process of
# the namespace); then remove the cgroup directories (depth first).
set -euo pipefail

mode=$1
workdir=$2

case "$mode" in
host)
    cgname=$3
    console=${4:-}
    for hierarchy in unified systemd; do
        mkdir -p "/sys/fs/cgroup/$hierarchy/$cgname"
        echo $$ > "/sys/fs/cgroup/$hierarchy/$cgname/cgroup.procs"
    done
    exec unshare --mount --propagation private --pid --fork --mount-proc \
        --net --uts --ipc --cgroup bash "$0" boot "$workdir" "$console"
    ;;
boot)
    mount -t tmpfs -o mode=755 tmpfs /run
    mkdir -p /run/systemd/system
    mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
    cp -r "$workdir/units/." /run/systemd/system/
    for unit in /usr/lib/systemd/system/* /usr/local/lib/systemd/system/*; do
        [ -e "$unit" ] || [ -L "$unit" ] || continue
        name=${unit##*/}
        case "$name" in
        *.wants | *.requires | *.d | *.slice) continue ;;
        esac
        target=/run/systemd/system/$name
        if [ ! -e "$target" ] && [ ! -L "$target" ]; then
            ln -s /dev/null "$target"
        fi
    done
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    mkdir /sys/fs/cgroup/unified /sys/fs/cgroup/systemd
    mount -t cgroup2 none /sys/fs/cgroup/unified
    mount -t cgroup -o none,name=systemd none /sys/fs/cgroup/systemd
    console=${3:-}
    if [ -z "$console" ]; then
        console=$workdir/console.log
        : > "$console"
    fi
    mount --bind "$console" /dev/console
    ip link set lo up
    export container=prefork-test SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=info
    exec /lib/systemd/systemd --system --unit=pftest.target
    ;;
*)
    echo "usage: $0 host WORKDIR CGROUP_NAME [TTY]" >&2
    exit 2
    ;;
esac
