"""The hello app for prefork's seed API (a request callback), as users write it.

Run: ``python -m prefork -b 127.0.0.1:8000 -w 1 --access-log off bench.apps.prefork_app:app``.
It answers in the raw style of the seed (one ``write`` of a ready response,
then ``finish``): the fastest path the API offers, and the one its README shows.
"""

from __future__ import annotations

from bench.apps import BIG, CONTENT_TYPE, HELLO, pid

_cache: dict[str, tuple[bytes, bytes]] = {}


def _responses() -> tuple[bytes, bytes]:
    """The hello response and the big response's head, built once per process."""
    me = pid()
    ready = _cache.get(me)
    if ready is None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nX-Pid: %s\r\nContent-Length: %d\r\n\r\n"
        hello = (head % (CONTENT_TYPE, me, len(HELLO))).encode() + HELLO
        big_head = (head % (CONTENT_TYPE, me, len(BIG))).encode()
        ready = _cache[me] = (hello, big_head)
    return ready


def app(request) -> None:
    """``/big`` gets 1 MiB (head and body written apart: no 1 MiB copy); all else hello."""
    hello, big_head = _responses()
    if request.path == "/big":
        request.write(big_head)
        request.write(BIG)
    else:
        request.write(hello)  # an upload's body is already read into request.body
    request.finish()
