"""A NOTIFY_SOCKET receiver for tests: what systemd's side of sd_notify sees.

Binds an ``AF_UNIX`` datagram socket (a path, as systemd's
``/run/systemd/notify``), turns on ``SO_PASSCRED`` so that each datagram
carries its sender's pid (the kernel fills it in; the sender cannot lie),
and closes any file descriptors passed with a message (``BARRIER=1`` and
``FDSTORE=1`` send some; systemd closes a barrier's fd to acknowledge it).

A background thread records every message with its arrival time; tests
wait for a field with :meth:`NotifyReceiver.wait_for` and look at the whole
sequence in :attr:`NotifyReceiver.messages`.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Message", "NotifyReceiver"]

_CREDS = struct.calcsize("3i")


@dataclass
class Message:
    """One datagram: its fields in order, the sender's pid, and when it arrived."""

    raw: bytes
    pid: int | None
    monotonic: float  # time.monotonic() at arrival
    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        for name, value in self.fields:
            if name == key:
                return value
        return None

    def has(self, key: str, value: str | None = None) -> bool:
        return any(n == key and (value is None or v == value) for n, v in self.fields)

    def __repr__(self) -> str:
        return f"<Message from {self.pid} at {self.monotonic:.3f}: {self.raw!r}>"


class NotifyReceiver:
    """Receive sd_notify datagrams on ``path`` until :meth:`close`."""

    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._closed = False
        self._callbacks: list = []
        self._barriers = 0
        self._thread = threading.Thread(target=self._run, name="notify-receiver", daemon=True)
        self._thread.start()

    def on_message(self, callback) -> None:
        """Call ``callback(message)`` in the receiver thread as each message arrives.

        The callback runs *before* the message is published to waiters, so it
        observes the world at the moment the notification arrived.
        """
        self._callbacks.append(callback)

    def _run(self) -> None:
        fd_space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        while not self._closed:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    65536, socket.CMSG_SPACE(_CREDS) + fd_space
                )
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._closed:
                    return
                raise
            now = time.monotonic()
            pid = None
            for level, kind, payload in ancdata:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == socket.SCM_CREDENTIALS and len(payload) >= _CREDS:
                    pid = struct.unpack("3i", payload[:_CREDS])[0]
                elif kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        os.close(fd)  # acknowledges a BARRIER=1
            fields = []
            for line in data.decode(errors="replace").split("\n"):
                if line:
                    key, _, value = line.partition("=")
                    fields.append((key, value))
            message = Message(data, pid, now, fields)
            for callback in self._callbacks:
                try:
                    callback(message)
                except Exception as exc:  # a test callback must not kill the receiver
                    message.fields.append(("_CALLBACK_ERROR", repr(exc)))
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

    def snapshot(self) -> list[Message]:
        with self._cond:
            return list(self.messages)

    def wait_for(
        self,
        key: str,
        value: str | None = None,
        *,
        after: int = 0,
        timeout: float = 15.0,
    ) -> tuple[int, Message]:
        """The first message at index >= ``after`` with ``key`` (= ``value``): (index, message).

        Raises AssertionError naming everything received when none arrives in time.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self.messages)):
                    if self.messages[index].has(key, value):
                        return index, self.messages[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    wanted = key if value is None else f"{key}={value}"
                    raise AssertionError(
                        f"no {wanted} within {timeout} s (after #{after}); got {self.messages!r}"
                    )
                self._cond.wait(remaining)

    def barrier(self, timeout: float = 15.0) -> int:
        """Send a marker datagram to the socket and wait for it; its index.

        Datagrams are received in the order they were queued, so every
        message sent before this call has been received (and recorded) once
        it returns.
        """
        self._barriers += 1
        marker = f"X_TEST_BARRIER={os.getpid()}.{self._barriers}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), self.path)
        key, _, value = marker.partition("=")
        index, _message = self.wait_for(key, value, timeout=timeout)
        return index

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
