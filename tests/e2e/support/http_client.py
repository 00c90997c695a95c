"""Minimal HTTP/1.1 client helpers for the e2e tests (standard library only).

Each response must be complete: a status line, ``Content-Length`` and the
whole body; the sd_app test application answers JSON.
"""

from __future__ import annotations

import json
import re
import socket

__all__ = ["get", "read_response", "send_request"]


def send_request(sock: socket.socket, path: str, close: bool = True) -> None:
    connection = b"close" if close else b"keep-alive"
    sock.sendall(
        b"GET %s HTTP/1.1\r\nHost: test\r\nConnection: %s\r\n\r\n" % (path.encode(), connection)
    )


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Read one complete Content-Length framed response: (status, JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if match is None:
        raise ValueError(f"no Content-Length in {head!r}")
    length = int(match.group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"body cut at {len(body)} of {length} bytes")
        body += chunk
    return status, json.loads(body[:length]) if body[:1] == b"{" else {}


def get(address, path: str = "/", timeout: float = 5.0) -> dict:
    """One request on a new connection; ``address`` is (host, port) or a unix path."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=timeout)
    with sock:
        send_request(sock, path)
        status, body = read_response(sock)
    assert status == 200, (status, body)
    return body
