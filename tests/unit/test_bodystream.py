"""BodyStream (``wsgi.input``): what a reader gets, fed from the loop's side.

The stream is fed directly (no socket, no loop): ``feed`` then ``finish``,
and every read checked against :class:`io.BytesIO` reading the same bytes.
"""

from __future__ import annotations

import io
import random
import time

import pytest

from prefork.worker.bodystream import BodyStream


def make_stream(pieces: list[bytes], window: int = 1 << 30) -> BodyStream:
    stream = BodyStream(lambda: None, lambda: None, window=window)
    for piece in pieces:
        stream.feed(piece)
    stream.finish()
    return stream


def split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        size = rng.choice([0, 1, 2, 3, 7, 64, 1000])
        pieces.append(data[at : at + size])
        at += size
    return pieces


@pytest.mark.parametrize("seed", range(40))
def test_reads_and_lines_across_chunks_match_a_file(seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(
        rng.choice([b"", b"a", b"bc", b"defgh" * 30]) + rng.choice([b"\n", b"", b"\r\n"])
        for _ in range(200)
    )
    stream, reference = make_stream(split_randomly(data, rng)), io.BytesIO(data)
    while True:
        op, size = rng.choice(["read", "readline"]), rng.choice([-1, 0, 1, 2, 5, 40, None])
        if op == "read" and size in (-1, None) and rng.random() < 0.9:
            size = 3  # keep most of the body for the other calls
        got = getattr(stream, op)(size)
        assert got == getattr(reference, op)(size), (op, size)
        if not got and size != 0 and reference.tell() == len(data):
            break
    assert stream.read() == b"" and stream.readline() == b""


def _time_lines(pieces: list[bytes]) -> tuple[float, int]:
    stream = make_stream(pieces)
    started = time.perf_counter()
    lines = sum(1 for _ in stream)
    return time.perf_counter() - started, lines


def test_short_lines_from_a_large_chunk_cost_no_copy_of_the_chunk() -> None:
    """A line read from a large chunk does not copy the rest of it: reading
    256 Ki lines of 2 bytes from one 512 KiB chunk takes about as long as
    from 64-byte chunks (it took some 7 times longer: a copy of the chunk's
    remainder per line, quadratic in the chunk's size; a socket read is up
    to 256 KiB)."""
    data = b"a\n" * (1 << 18)
    small = [data[i : i + 64] for i in range(0, len(data), 64)]
    small_time, small_lines = _time_lines(small)
    large_time, large_lines = _time_lines([data])
    assert small_lines == large_lines == 1 << 18
    assert large_time < 3 * small_time + 0.05, (large_time, small_time)
