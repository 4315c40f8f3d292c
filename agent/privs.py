"""Give up privileges once the raw sockets are open: they keep working, nothing else needs root.

Run with sudo, the agent becomes the invoking user (SUDO_UID/SUDO_GID) or --user; run with file
capabilities (setcap cap_net_raw+ep), it clears its capability sets. Plain root without --user stays root.
"""

from __future__ import annotations

import ctypes
import os
import pwd

from .errors import AgentError

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def target_ids(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) to become, or None to stay as we are."""
    if user:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise AgentError(f"unknown user {user!r}") from None
        return pw.pw_uid, pw.pw_gid
    if os.getuid() == 0 and "SUDO_UID" in os.environ:
        try:
            return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
        except ValueError:
            raise AgentError("SUDO_UID/SUDO_GID are not numbers") from None
    return None


def drop(user: str | None) -> None:
    """Become `user` / the sudo user, or shed file capabilities; verify root cannot be regained."""
    ids = target_ids(user)
    if ids is not None and ids[0] not in (0, os.getuid()):
        if os.geteuid() != 0:
            raise AgentError("--user needs the agent to start as root")
        uid, gid = ids
        os.setgroups([])  # supplementary groups first: after setuid we may no longer change them
        os.setgid(gid)
        os.setuid(uid)  # as root this sets real, effective and saved uid: no way back
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise AgentError("could not drop root privileges")
    if os.getuid() != 0:  # after setuid() the kernel has cleared them already; with setcap it has not
        _clear_capabilities()


def _clear_capabilities() -> None:
    # capset(2) with all-zero sets: CAP_NET_RAW from setcap is gone once the sockets exist.
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.capset(header, data) != 0:
        raise AgentError(f"could not clear capabilities: {os.strerror(ctypes.get_errno())}")
