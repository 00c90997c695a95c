"""PEP 3333: serve a WSGI application from a worker's event loop.

``HTTPServer(WSGIAdapter(app))`` serves ``app(environ, start_response)``.
The loop thread only reads requests and writes responses; the application
runs in a bounded thread pool of the worker, so a slow request never stalls
the other connections or the heartbeat the master watches.

Threading rule: the connection is touched on the loop thread only.  The
application's thread hands each step (head + first chunk, a chunk, finish,
abort) to the loop with ``call_soon_threadsafe`` and waits while more than
``window`` bytes are handed over but not yet written to the socket: a huge
streamed body is held back by the client's reading speed, not buffered.

Framing: a body known to be complete (a list or tuple of at most one chunk,
PEP 3333's ``len() == 1`` case) gets a Content-Length; a Content-Length set
by the application is honoured (excess bytes are cut, a short body closes
the connection); anything else streams chunked (HTTP/1.1) or
close-delimited (HTTP/1.0).  Every chunk is written out at once, as PEP 3333
requires ("must not delay the transmission of any block").  The answer to
HEAD is framed as GET's would be: a body that would stream gets no
Content-Length (never one counted from a last piece alone).

``wsgi.file_wrapper`` (:class:`FileWrapper`): a regular file returned through
it goes out with zero copies (``os.sendfile``, the connection's
:meth:`~prefork.worker.connection.HTTPConnection.send_file`), from its current
position, with the application's Content-Length or the size of what is left;
on TLS, or for a file-like with no file descriptor (BytesIO), it is read in
``block_size`` pieces like any iterable.

``wsgi.input`` streams: the application is called as soon as the request
head has arrived and reads the body while it comes in (blocking in its own
thread); past a window of unread bytes the connection stops reading from the
socket, so an upload never has to fit in memory.  ``max_body_size`` and the
body timeout still apply.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from prefork.worker.bodystream import ClientDisconnected
from prefork.worker.filesend import SendfileUnavailable, regular_file_fd
from prefork.worker.request import under_root
from prefork.worker.response import bodyless, build_response_head, declared_length

if TYPE_CHECKING:
    from prefork.worker.ioloop import IOLoop
    from prefork.worker.request import HTTPRequest

__all__ = [
    "DEFAULT_THREADS",
    "FileWrapper",
    "WSGIAdapter",
    "build_environ",
]

error_log = logging.getLogger("prefork.error")

#: Application threads per worker.  Workers already give one process per CPU;
#: threads let a worker overlap I/O waits (database, upstream HTTP) of
#: typical WSGI apps, as waitress's default of 4 does, at little memory cost.
DEFAULT_THREADS = 4
#: Bytes handed to the loop but not yet written before the app thread waits.
WINDOW = 256 * 1024
#: Seconds a response may make no progress (client not reading) before the
#: connection is closed, so a stuck client cannot hold a pool thread forever.
SEND_TIMEOUT = 60.0
#: Bytes read at a time from a regular file that cannot go by sendfile (TLS):
#: the application's block_size is a hint (Django gives 4 KiB), and each block
#: is a hand-over to the loop, so a regular file is read in pieces this big.
FILE_READ_BLOCK = 64 * 1024

_POLL = 0.5  # how often a waiting app thread checks that the loop still runs
_ERROR_HEAD = (
    500,
    None,
    # (closed after, as on the other interfaces: what the failed application
    # left unread of the request cannot be trusted to frame the next one)
    [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
)
_ERROR_BODY = b"500 Internal Server Error\n"

# Where a request's WSGI call is, for --request-timeout (_Response.phase).
_QUEUED = 0  # waiting for a pool thread
_RUNNING = 1  # the application is being called (or its body iterated)
_RETURNED = 2  # done with the application

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ErrorStream:
    """``wsgi.errors``: what the application writes, logged line by line."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                error_log.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            error_log.error("%s", self._partial)
            self._partial = ""


class FileWrapper:
    """``wsgi.file_wrapper`` (PEP 3333): ``environ["wsgi.file_wrapper"](file, block_size)``.

    What the application returns as its body.  The server sends a regular
    file with zero copies (see :class:`_Response`); anything else, or over
    TLS, is read through this iterable, ``block_size`` bytes at a time, from
    the file's current position.  ``close()`` closes the file (PEP 3333: the
    server calls it when the response is done, as for every iterable).
    """

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.block_size)
        if data:
            return data  # type: ignore[no-any-return]
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _read_in_large_blocks(wrapper: FileWrapper) -> None:
    """A regular file read through its wrapper: in FILE_READ_BLOCK pieces at least."""
    if wrapper.block_size < FILE_READ_BLOCK:
        wrapper.block_size = FILE_READ_BLOCK


def _split_host(host: str, default_port: str) -> tuple[str, str]:
    """``example.com:8080`` / ``[::1]:80`` / ``example.com`` -> (name, port)."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            port = host[end + 2 :] if host[end + 1 : end + 2] == ":" else ""
            return host[: end + 1], port or default_port
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name and (port.isdigit() or not port):
        return name, port or default_port
    return host, default_port


def build_environ(
    request: HTTPRequest, multithread: bool = True, root_path: str = ""
) -> dict[str, Any]:
    """The PEP 3333 environ of ``request`` (called on the loop thread).

    ``root_path`` (``--root-path``) is the prefix the application is mounted
    under: it becomes ``SCRIPT_NAME``, and is taken off ``PATH_INFO`` when the
    path starts with it at a segment boundary (a proxy that kept the prefix).
    """
    scheme = request.protocol
    path = request.origin_path  # (absolute-form: the part after the authority)
    if root_path and under_root(root_path, path):
        path = path[len(root_path) :]
    # PEP 3333: the decoded bytes, carried as a latin-1 "bytes-as-str".
    path_info = unquote_to_bytes(path).decode("latin-1")
    conn = request.connection
    remote_addr = request.remote_ip or ""
    if remote_addr == "0.0.0.0" and conn is not None and type(conn.address) is not tuple:
        # A unix-socket peer has no address: "" as gunicorn gives (the seed's
        # remote_ip says 0.0.0.0, which reached the application's logs as if
        # it were one); a trusted proxy's forwarded address still shows.
        remote_addr = ""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query,
        "SERVER_PROTOCOL": request.version,
        "REMOTE_ADDR": remote_addr,
        "RAW_URI": request.uri,
        "REQUEST_URI": request.uri,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": request.body_stream
        if request.body_stream is not None
        else io.BytesIO(request.body),
        "wsgi.errors": _ErrorStream(),
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
    for name, value in request.headers.get_all():
        if "_" in name:
            # X-Auth_User would collide with X-Auth-User (the CGI spoofing
            # problem); gunicorn and nginx drop such headers too.
            continue
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        old = environ.get(key)
        if old is None:
            environ[key] = value
        else:
            environ[key] = old + ("; " if key == "HTTP_COOKIE" else ",") + value
    if "CONTENT_LENGTH" not in environ and request.body and request.body_stream is None:
        # A chunked body was read whole: its length is known now.
        environ["CONTENT_LENGTH"] = str(len(request.body))
    default_port = "443" if scheme == "https" else "80"
    host = environ.get("HTTP_HOST")
    if host:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(host, default_port)
    else:
        sockname = conn.transport.get_extra_info("sockname") if conn and conn.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            ip = str(sockname[0])
            environ["SERVER_NAME"] = f"[{ip}]" if ":" in ip else ip
            environ["SERVER_PORT"] = str(sockname[1])
        else:  # a unix socket has no host name or port
            environ["SERVER_NAME"], environ["SERVER_PORT"] = "localhost", default_port
    address = conn.address if conn is not None else None
    if isinstance(address, tuple) and len(address) >= 2 and address[0] == request.remote_ip:
        environ["REMOTE_PORT"] = str(address[1])
    return environ


def _parse_status(status: str) -> tuple[int, str | None]:
    if not isinstance(status, str):
        raise TypeError(f"WSGI status must be a str, not {type(status).__name__}")
    code = status[:3]
    if len(code) != 3 or not code.isdigit() or status[3:4] not in ("", " "):
        raise ValueError(f"invalid WSGI status {status!r} (expected '200 OK')")
    if not "200" <= code <= "599":
        # A 1xx would leave the client waiting for the final answer (an
        # interim one is the server's to send); 600-999 are no HTTP status.
        raise ValueError(f"invalid WSGI status {status!r} (a final status, 200-599)")
    return int(code), status[4:] or None


class _Response:
    """One request's WSGI call: runs in a pool thread, answers via the loop."""

    #: with --request-timeout: _QUEUED, _RUNNING, _RETURNED (under ``cond``)
    phase = _QUEUED
    #: --request-timeout gave the response up while the application ran
    abandoned = False

    def __init__(self, adapter: WSGIAdapter, request: HTTPRequest, loop: Any) -> None:
        self.app = adapter.app
        self.window = adapter.window
        self.send_timeout = adapter.send_timeout
        self.request = request
        self.loop: asyncio.AbstractEventLoop = loop
        self.cond = threading.Condition()
        self.gone = False  # the client went away, or the response was given up
        self.posted = 0  # body bytes handed to the loop (app thread)
        self.acked = 0  # of those, bytes known written out (set by the loop)
        self.status: tuple[int, str | None] | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.remaining: int | None = None  # of the declared Content-Length
        self.bodyless = False
        self.finished = False  # loop side: finish() was called
        #: a file descriptor handed to the loop for send_file, until it takes it
        #: (whichever side takes it under ``cond`` closes or sends it)
        self.pending_fd: int | None = None
        self.file_fallback = False  # sendfile refused the file: read it instead
        self.write_refused = False  # write() raised ClientDisconnected

    # -- the application's side (pool thread) -------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        code, reason = _parse_status(status)
        pairs = [(name, value) for name, value in headers]
        # Refuse bad headers now, in the application's frame (PEP 3333).
        build_response_head(code, reason, pairs)
        remaining = None
        for name, value in pairs:
            if name.lower() == "content-length":
                remaining = declared_length(value, remaining)  # (two differing: ValueError)
        self.remaining = remaining
        self.status = (code, reason)
        self.headers = pairs
        self.bodyless = bodyless(self.request.method, code)
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write()`` callable start_response returns.

        Once the client is gone (or the response was given up) it raises
        ClientDisconnected, as a socket write would (gunicorn raises the
        socket's error): an application streaming through write() in a loop
        of its own has no other way to learn it, and would keep a pool
        thread busy for ever.  An iterable is simply no longer iterated.
        """
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if self.gone:
            self.write_refused = True
            raise ClientDisconnected("the client disconnected before the response was complete")
        self._send(data)

    def _send(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
        if not data or self.gone:
            return
        if self.status is None:
            raise AssertionError("the application sent body bytes before start_response()")
        if self.bodyless:
            if not self.headers_sent:
                # Nothing is sent, but the head is framed as for GET, which
                # would stream from here: no Content-Length from a last piece.
                self.headers_sent = True
                code, reason = self.status
                self._post(self._loop_start, code, reason, self.headers, b"", self.posted)
            return
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
            if not data:
                return
        data = bytes(data)
        self.posted += len(data)
        if self.headers_sent:
            self._post(self._loop_write, data, self.posted)
        else:
            self.headers_sent = True
            code, reason = self.status
            self._post(self._loop_start, code, reason, self.headers, data, self.posted)
        self._wait_for_window()

    def _wait_for_window(self, window: int | None = None) -> None:
        """Back-pressure: wait until at most ``window`` bytes are unsent."""
        if window is None:
            window = self.window
        with self.cond:
            acked = self.acked
            deadline = time.monotonic() + self.send_timeout
            while not self.gone and self.posted - self.acked > window:
                if not self.loop.is_running():  # the worker is going away
                    self.gone = True
                    return
                self.cond.wait(_POLL)
                if self.acked != acked:
                    acked = self.acked
                    deadline = time.monotonic() + self.send_timeout
                elif time.monotonic() > deadline:
                    error_log.warning("%s: client read nothing; closing", self.request.uri)
                    self.gone = True

    def run(self, environ: dict[str, Any]) -> None:
        """Call the application and send its response (in a pool thread)."""
        result: Any = None
        whole: Any = None
        try:
            if self.gone:  # the client left while the request was queued
                self._post(self._loop_abort)
                return
            try:
                result = self.app(environ, self.start_response)
                one_piece = isinstance(result, (list, tuple)) and len(result) <= 1
                if type(result) is FileWrapper and self._send_file(result):
                    pass  # sent (for HEAD, the head alone is due: _complete)
                elif one_piece and not self.headers_sent:
                    whole = result[0] if result else b""
                else:
                    for chunk in result:
                        self._send(chunk)
                        if self.gone or (self.bodyless and self.headers_sent):
                            break  # no body will be sent: stop producing it
            finally:
                with self.cond:  # (the loop never took it: it gave up, or the client went)
                    fd, self.pending_fd = self.pending_fd, None
                if fd is not None:
                    os.close(fd)
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            self._complete(whole)
        except ClientDisconnected as exc:
            # wsgi.input: the client's body ended early or was refused (the
            # connection answered 400/408/413 and closed, see _reject), or
            # write() after the client left: the client's doing, told in one
            # line, not an application traceback.  A refusal is that line
            # already (the connection's): this one would be a second per
            # request, so it is only for debugging.
            (error_log.debug if exc.refused else error_log.info)(
                "WSGI application stopped %s: %s %s: %s",
                "writing" if self.write_refused else "reading",
                self.request.method,
                self.request.uri,
                exc,
            )
            self._post(self._loop_abort)
        except BaseException:  # a pool thread has nobody else to tell
            error_log.exception("Error in WSGI application: %s", self.request.uri)
            if self.headers_sent or self.gone:
                self._post(self._loop_abort)  # bytes are out: only a close can tell
            else:
                self._post(self._loop_finish, _ERROR_HEAD, _ERROR_BODY)
        finally:
            environ["wsgi.errors"].flush()

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a ``wsgi.file_wrapper`` body with zero copies; False: iterate it.

        A regular file gets the application's Content-Length, or the size of
        what is left of it from its current position (so HEAD gets the
        length GET sends); then, on a plain socket, ``os.sendfile`` sends it
        (this thread waits, with the send timeout, while the loop does).
        """
        if self.status is None or self.headers_sent or self.gone:
            return False
        filelike = wrapper.filelike
        fd = regular_file_fd(filelike)
        if fd is None:
            return False
        try:
            offset = filelike.tell()
            size = max(os.fstat(fd).st_size - offset, 0)
        except (OSError, ValueError, AttributeError):
            return False
        if self.remaining is None:
            self.headers = [*self.headers, ("Content-Length", str(size))]
            self.remaining = size
        count = min(self.remaining, size)
        if self.bodyless or count == 0:
            return True  # the head alone (_complete)
        conn = self.request.connection
        if conn is None or not conn.can_send_file():
            _read_in_large_blocks(wrapper)
            return False  # (read in pieces, the length now known)
        self.pending_fd = os.dup(fd)  # (ours: the application may close its file any time)
        self.headers_sent = True
        mark = self.posted = self.posted + count
        code, reason = self.status
        self._post(self._loop_send_file, code, reason, self.headers, offset, count, mark)
        self._wait_for_window(0)
        if self.file_fallback:  # nothing of the file went: read it after all
            _read_in_large_blocks(wrapper)
            return False
        self.remaining -= count
        return True

    def _complete(self, whole: Any) -> None:
        if self.gone:
            self._post(self._loop_abort)
            return
        if self.headers_sent:
            self._post(self._loop_finish, None, b"")
            return
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        if whole is not None and not isinstance(whole, (bytes, bytearray)):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(whole).__name__}")
        body = bytes(whole or b"")
        code, reason = self.status
        headers = self.headers
        if self.remaining is not None and not self.bodyless:
            if len(body) < self.remaining:
                headers = [*headers, ("Connection", "close")]  # short: end by closing
            body = body[: self.remaining]
        elif (
            not body
            and self.remaining is None
            and self.request.method == "HEAD"
            and not bodyless("GET", code)
        ):
            # The whole body is known to be empty: GET gets Content-Length: 0,
            # and so does HEAD (the framing takes an empty HEAD body for one
            # not produced, as a callback handler's may be, and sends none).
            headers = [*headers, ("Content-Length", "0")]
        self._post(self._loop_finish, (code, reason, headers), body)

    # -- hand-over -------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._on_loop, fn, args)
        except RuntimeError:  # the loop is closed: the worker is exiting
            self.client_gone()

    def client_gone(self) -> None:
        """The connection closed (its close callback, on the loop) or was given up."""
        with self.cond:
            self.gone = True
            self.cond.notify_all()

    def _ack(self, mark: int) -> None:
        with self.cond:
            if mark > self.acked:
                self.acked = mark
                self.cond.notify_all()

    # -- the loop's side: the only code that touches the connection -------------

    def _on_loop(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self.finished:
            return  # the connection may serve another request by now
        try:
            fn(*args)
        except Exception:
            error_log.exception("Error writing a WSGI response: %s", self.request.uri)
            self.client_gone()
            if not self.finished:
                self._loop_abort()

    def _loop_start(
        self, code: int, reason: str | None, headers: list[tuple[str, str]], data: bytes, mark: int
    ) -> None:
        request = self.request
        request.write_headers(code, headers, reason)
        request.write(data)
        # A second write makes the connection send the held head and first
        # chunk now, streaming, instead of waiting to see if more follows.
        request.write(b"", lambda: self._ack(mark))

    def _loop_send_file(
        self,
        code: int,
        reason: str | None,
        headers: list[tuple[str, str]],
        offset: int,
        count: int,
        mark: int,
    ) -> None:
        with self.cond:
            fd, self.pending_fd = self.pending_fd, None
        if fd is None:
            return  # the application's thread gave up already
        request = self.request
        conn = request.connection
        if conn is None:
            os.close(fd)
            return
        base = mark - count
        try:
            request.write_headers(code, headers, reason)
        except BaseException:
            os.close(fd)
            raise
        conn.send_file(
            fd,
            offset,
            count,
            lambda sent, error: self._file_sent(error, mark),
            lambda sent: self._ack(base + sent),
        )

    def _file_sent(self, error: BaseException | None, mark: int) -> None:
        if isinstance(error, SendfileUnavailable):
            self.file_fallback = True
        elif error is not None:
            self.client_gone()
            return
        self._ack(mark)  # (a file that ended early: the connection closes after it)

    def _loop_write(self, data: bytes, mark: int) -> None:
        self.request.write(data, lambda: self._ack(mark))

    def _loop_finish(
        self, head: tuple[int, str | None, list[tuple[str, str]]] | None, body: bytes
    ) -> None:
        request = self.request
        if request.connection is not None:
            # Before finish(): it may start the next request on this connection.
            request.connection.set_close_callback(None)
        if head is not None:
            code, reason, headers = head
            request.write_headers(code, headers, reason)
            if body:
                request.write(body)
        self.finished = True
        try:
            request.finish()
        except Exception:
            # (the held head failed its framing: the response is given up,
            # by _on_loop; marked finished, it was left open, the client
            # waiting for ever)
            self.finished = False
            raise

    def _loop_abort(self) -> None:
        """Give up the response: close the connection, account the request."""
        self.finished = True
        request = self.request
        conn = request.connection
        if conn is not None:
            conn.set_close_callback(None)
            conn.abort_response()  # (a reset where only the close ends the body)
        try:
            request.finish()
        except Exception:
            error_log.exception("Error finishing an aborted WSGI response")


class WSGIAdapter:
    """A request callback that serves a PEP 3333 application.

    It is called as soon as a request head arrives (``streams_request_body``)
    and the application reads the body from ``wsgi.input`` as it streams in.

    ``threads`` bounds the application calls running at once in this worker
    (more requests wait in the pool's queue); with ``threads=1`` the environ
    says ``wsgi.multithread: False``.  The pool is created in the process
    that serves, never inherited across fork().
    """

    #: the connection calls us at the request head, the body streams in after.
    streams_request_body = True

    def __init__(
        self,
        app: WSGIApp,
        threads: int = DEFAULT_THREADS,
        io_loop: IOLoop | None = None,
        *,
        window: int = WINDOW,
        send_timeout: float = SEND_TIMEOUT,
        root_path: str = "",
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.app = app
        self.threads = threads
        #: SCRIPT_NAME (``--root-path``), without a trailing slash
        self.root_path = root_path.rstrip("/")
        self.io_loop = io_loop
        self.window = window
        self.send_timeout = send_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        #: pool threads still running a request --request-timeout gave up
        #: (counted on the loop)
        self.abandoned = 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """This process's pool (a pool copied by fork() has no threads)."""
        pid = os.getpid()
        if self._executor is None or self._executor_pid != pid:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="prefork-wsgi")
            self._executor_pid = pid
        return self._executor

    def __call__(self, request: HTTPRequest) -> None:
        if self.io_loop is not None:
            loop = self.io_loop.asyncio_loop
        else:
            loop = asyncio.get_running_loop()
        environ = build_environ(request, self.threads > 1, self.root_path)
        request.wsgi_environ = environ  # for the post_request server hook
        response = _Response(self, request, loop)
        conn = request.connection
        if conn is not None:
            if conn.closed():
                response.gone = True
            conn.set_close_callback(response.client_gone)
            if conn.config.request_timeout:
                request.on_timeout = functools.partial(self._timed_out, response)
                self.executor.submit(self._run_tracked, response, environ)
                return
        self.executor.submit(response.run, environ)

    # -- --request-timeout: a thread cannot be cancelled ---------------------------------

    def _run_tracked(self, response: _Response, environ: dict[str, Any]) -> None:
        """``response.run`` in a pool thread, its phase known to the loop."""
        with response.cond:
            response.phase = _RUNNING
        try:
            response.run(environ)
        finally:
            with response.cond:
                response.phase = _RETURNED
                abandoned = response.abandoned
            if abandoned:
                try:
                    response.loop.call_soon_threadsafe(self._abandoned_returned, response)
                except RuntimeError:
                    pass  # the loop is closed: the worker is exiting

    def _timed_out(self, response: _Response) -> str | None:
        """The connection gave the request up (503 or a close), on the loop.

        A call still queued never runs.  A running one cannot be stopped: its
        thread runs on to the application's end, its output going nowhere,
        and is counted in :attr:`abandoned` meanwhile.  Returns the note for
        the connection's log line.
        """
        with response.cond:
            response.gone = True  # (its writes are dropped, a wait for the client ends)
            response.cond.notify_all()
            phase = response.phase
            if phase == _RUNNING:
                response.abandoned = True
        if phase == _QUEUED:
            return "its WSGI call had not started; it will not run"
        if phase == _RETURNED:
            return None
        self.abandoned += 1
        if self.abandoned >= self.threads:
            return (
                f"its WSGI thread runs on; all {self.threads} thread(s) of this worker run "
                "abandoned requests: new requests wait in the queue, and get 503 at "
                "--request-timeout, until one returns"
            )
        return (
            f"its WSGI thread runs on until the application returns; {self.abandoned} of "
            f"{self.threads} thread(s) run abandoned requests"
        )

    def _abandoned_returned(self, response: _Response) -> None:
        """A thread whose request timed out is free again (on the loop)."""
        self.abandoned -= 1
        request = response.request
        error_log.info(
            "WSGI application returned %.1f s after its request began (it had timed out): "
            "%s %s; %d thread(s) still run abandoned requests",
            time.time() - request._start_time,
            request.method,
            request.uri,
            self.abandoned,
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool (pending requests are still run when ``wait``)."""
        if self._executor is not None and self._executor_pid == os.getpid():
            self._executor.shutdown(wait=wait)
        self._executor = None
