"""The first bytes of a few packets' transport payloads, read again from their capture file.

The packets table keeps each packet's payload length, not its bytes: scans need no more. Naming what a
scanner said once connected (nmap's version probes, its scripts' requests) takes the first bytes of its
first data segments: a handful of frames, read here by frame number from the file the table was read from
(`packets.attrs["path"]`), each decoded by dpkt. Frames that cannot be decoded give no bytes.
"""

from __future__ import annotations

import os
import warnings

import dpkt
import numpy as np
import pandas as pd

from ..errors import CaptureError, CaptureWarning
from .formats import iter_records

# link type → dpkt's decoder of its frames (raw IP link types by their own numbers)
_LINKS = {1: dpkt.ethernet.Ethernet, 113: dpkt.sll.SLL, 276: dpkt.sll2.SLL2, 0: dpkt.loopback.Loopback,
          108: dpkt.loopback.Loopback}
_RAW_IP = (12, 14, 101, 228, 229)
MOST_FRAMES = 2000  # frames read at most: a stage names a run's connections, not a capture's traffic
RECORDS_AT_A_TIME = 1 << 18  # records of the file indexed at a time (a big file's index is never whole)


def payload_heads(packets: pd.DataFrame, frames: np.ndarray, size: int = 256) -> dict[int, bytes]:
    """frame → the first `size` bytes of its TCP or UDP payload, for the frames given (at most MOST_FRAMES:
    the first of them); {} when the table has no file to read from (`attrs["path"]`) or it cannot be read."""
    path = packets.attrs.get("path")
    frames = np.unique(np.asarray(frames, np.int64))[:MOST_FRAMES]
    if not path or not len(frames) or not os.path.exists(path):
        return {}
    out = {}
    try:
        with warnings.catch_warnings():  # (the file's damage was told when the table was read)
            warnings.simplefilter("ignore", CaptureWarning)
            for records in iter_records(path, RECORDS_AT_A_TIME):  # (up to the last frame wanted, no further)
                numbers = records.frames()
                for i in np.flatnonzero(np.isin(numbers, frames)).tolist():
                    start = int(records.offset[i])
                    payload = _payload(bytes(records.data[start:start + int(records.caplen[i])]),
                                       int(records.linktype[i]))
                    if payload is not None:
                        out[int(numbers[i])] = payload[:size]
                if len(numbers) and numbers[-1] >= frames[-1]:
                    break
    except (CaptureError, OSError):
        return {}
    return out


def _payload(data: bytes, link: int) -> bytes | None:
    """The TCP or UDP payload of one frame, or None."""
    try:
        if link in _RAW_IP:
            ip = dpkt.ip6.IP6(data) if data[:1] and data[0] >> 4 == 6 else dpkt.ip.IP(data)
        elif link in _LINKS:
            frame = _LINKS[link](data)
            ip = frame.data
            while ip is not None and not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and hasattr(ip, "data") \
                    and not isinstance(ip, bytes):
                ip = ip.data
        else:
            return None
        l4 = ip.data if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            return bytes(l4.data)
    except (dpkt.dpkt.UnpackError, ValueError, IndexError, AttributeError):
        return None
    return None
