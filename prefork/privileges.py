"""Dropping root after binding: ``--user`` / ``--group``.

The master binds privileged ports as root and forks; each worker switches to
the configured group and user before it imports the application, so no
application code ever runs as root.  The parent-death signal is set after
the switch (a credential change clears it), by ``prefork.lifecycle``.
"""

from __future__ import annotations

import grp
import os
import pwd

__all__ = ["drop_privileges", "resolve_group", "resolve_user"]


def resolve_user(name: str) -> tuple[int, int]:
    """User name or uid -> (uid, its primary gid); ValueError if unknown."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise ValueError(f"no such user: {name!r}") from None
    return entry.pw_uid, entry.pw_gid


def resolve_group(name: str) -> int:
    """Group name or gid -> gid; ValueError if unknown."""
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except (KeyError, OverflowError):
        raise ValueError(f"no such group: {name!r}") from None


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """Switch to ``gid`` then ``uid`` (supplementary groups reset to the user's)."""
    if gid is not None and gid != os.getgid():
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None and uid != os.getuid():
        if gid is None:
            os.setgroups([])
        try:
            user_name = pwd.getpwuid(uid).pw_name
            os.initgroups(user_name, gid if gid is not None else pwd.getpwuid(uid).pw_gid)
        except KeyError:
            pass
        os.setuid(uid)
