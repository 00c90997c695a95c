"""The slow-request deadlines (Apache mod_reqtimeout's rule), as plain arithmetic."""

from __future__ import annotations

import pytest

from prefork.settings import DEFAULTS
from prefork.worker.deadlines import body_deadline, head_deadline

# -- heads: header_timeout, plus 1 s per header_min_rate bytes, at most header_timeout_max


def test_a_head_with_no_bytes_has_the_plain_timeout() -> None:
    assert head_deadline(100.0, 0, 20.0, 500, 40.0) == 120.0


def test_a_head_earns_a_second_per_min_rate_bytes() -> None:
    assert head_deadline(100.0, 500, 20.0, 500, 40.0) == 121.0
    assert head_deadline(100.0, 2500, 20.0, 500, 40.0) == 125.0
    assert head_deadline(100.0, 250, 20.0, 500, 40.0) == 120.5


def test_a_head_never_gets_more_than_the_maximum() -> None:
    # 64 KiB at 500 B/s would earn 131 s: the maximum caps it.
    assert head_deadline(100.0, 65536, 20.0, 500, 40.0) == 140.0


@pytest.mark.parametrize("maximum", [0.0, 10.0, 20.0])
def test_a_maximum_at_or_below_the_timeout_means_no_extension(maximum: float) -> None:
    assert head_deadline(100.0, 5000, 20.0, 500, maximum) == 120.0


def test_a_head_min_rate_of_zero_means_no_extension() -> None:
    assert head_deadline(100.0, 5000, 20.0, 0, 40.0) == 120.0


def test_a_slowloris_head_is_cut_where_its_bytes_stop_paying() -> None:
    """11 bytes every 0.1 s (110 B/s) against 500 B/s: the deadline, pushed by
    each line, is overtaken by the clock at 0.5 / (1 - 110/500) s."""
    start, timeout, rate = 0.0, 0.5, 500
    now, received = 0.0, 0
    while head_deadline(start, received, timeout, rate, 40.0) > now:
        now += 0.1
        received += 11
    assert now == pytest.approx(0.7)  # the first 0.1 s step past 0.641 s


# -- bodies: body_timeout, plus 1 s per body_min_rate bytes; and no long silence


def test_a_body_earns_a_second_per_min_rate_bytes() -> None:
    # Bytes seen just now: the stall rule is far away.
    assert body_deadline(100.0, 0, 20.0, 500, 100.0) == 120.0
    assert body_deadline(100.0, 5000, 20.0, 500, 125.0) == 130.0


def test_a_body_has_no_maximum() -> None:
    assert body_deadline(0.0, 100 * 1024 * 1024, 20.0, 500, 1000.0) == 1020.0


def test_a_body_that_stalls_is_cut_a_timeout_after_its_last_progress() -> None:
    # 10 MB fast earned 20000 s; silence since t=130 still ends it at t=150.
    assert body_deadline(100.0, 10_000_000, 20.0, 500, 130.0) == 150.0


def test_a_body_min_rate_of_zero_keeps_only_the_stall_rule() -> None:
    # The rule of earlier versions: body_timeout without a byte.
    assert body_deadline(100.0, 0, 20.0, 0, 100.0) == 120.0
    assert body_deadline(100.0, 10, 20.0, 0, 500.0) == 520.0


def test_a_trickled_body_is_cut_when_time_overtakes_its_earnings() -> None:
    """A sweep that checks every 0.125 s, as the server does with 0.5 s timeouts:
    500 B/s against a 1000 B/s minimum, body_timeout 0.5 s, is cut just after
    t = 0.5 / (1 - 500/1000) = 1.0 s."""
    start, timeout, rate = 0.0, 0.5, 1000
    deadline = start + timeout
    seen, progress = 0, start
    now = 0.0
    while True:
        now += 0.125
        if now < deadline:
            continue
        received = int(500 * now)
        if received != seen:
            seen, progress = received, now
        deadline = body_deadline(start, received, timeout, rate, progress)
        if deadline <= now:
            break
    assert 1.0 <= now <= 1.125


def test_a_body_at_the_rate_or_faster_is_never_cut() -> None:
    start, timeout, rate = 0.0, 0.5, 1000
    for step in range(1, 200):
        now = step * 0.125
        assert body_deadline(start, int(1000 * now), timeout, rate, now) > now


def test_the_defaults_follow_mod_reqtimeout() -> None:
    # header=20-40,MinRate=500 body=20,MinRate=500
    assert (DEFAULTS.header_timeout, DEFAULTS.header_timeout_max) == (20.0, 40.0)
    assert DEFAULTS.header_min_rate == 500
    assert (DEFAULTS.body_timeout, DEFAULTS.body_min_rate) == (20.0, 500)
