"""Output helpers checked against the system they stand in for."""

from __future__ import annotations

import socket

import pytest

from analyzer.output import service_name


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_service_names_are_getservbyport(protocol: str) -> None:
    """service_name reads /etc/services once; it must name every port as getservbyport(3) does."""
    ports = list(range(1200)) + list(range(1200, 65536, 7)) + [65535]
    for port in ports:
        try:
            want = socket.getservbyport(port, protocol)
        except OSError:
            want = "unknown"
        assert service_name(port, protocol) == want, (port, protocol)
    assert service_name(22, "tcp") == "ssh"  # the test would pass vacuously with no /etc/services
