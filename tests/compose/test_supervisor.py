"""The process supervisor's port picking: free, and never the same one twice."""

from __future__ import annotations

import socket

from compose.supervisor import free_port


def test_free_ports_are_distinct_within_a_process() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
