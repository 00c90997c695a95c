"""When a slow request head or body is late: Apache mod_reqtimeout's rule.

Pure arithmetic on loop times and byte counts, so the rule can be tested
without a clock.  The connection (:mod:`prefork.worker.connection`) keeps
one deadline per connection and does nothing about it per read: only when
the deadline passes (the server's sweep calls ``on_timeout``) does it take
the bytes received so far (which the parser and the body hold anyway) and
ask these functions for the next one.  A deadline
later than now means the client is keeping up: wait until then; one at or
before now means it is too slow: 408 and close.

* A **head** started at ``start`` has ``timeout`` seconds, plus 1 s for
  every ``min_rate`` bytes received, but never more than ``maximum``
  seconds in all (``header_timeout=20``, ``header_min_rate=500``,
  ``header_timeout_max=40``: mod_reqtimeout's ``header=20-40,MinRate=500``).
* A **body** started at ``start`` has ``timeout`` seconds, plus 1 s for
  every ``min_rate`` bytes received, with no maximum (``body_timeout=20``,
  ``body_min_rate=500``: ``body=20,MinRate=500``); and, since bytes received
  early would otherwise pay for any later silence, it is also late
  ``timeout`` seconds after the last check that saw a byte arrive
  (``last_progress``): a body that stalls is cut after ``timeout`` to
  ``2 * timeout`` seconds of silence, however much came before.

A ``min_rate`` of 0 turns the rate rule off and leaves the plain timeout:
a head must be whole ``timeout`` seconds after it started; a body must not
go ``timeout`` seconds without a byte (the rule of earlier versions).
"""

from __future__ import annotations

__all__ = ["body_deadline", "head_deadline"]


def head_deadline(
    start: float, received: int, timeout: float, min_rate: int, maximum: float
) -> float:
    """When a request head begun at ``start``, ``received`` bytes of it here, is late.

    ``maximum`` below ``timeout`` (0, say) means no extension at all.
    """
    deadline = start + timeout
    if min_rate > 0 and received > 0:
        deadline = min(deadline + received / min_rate, start + max(maximum, timeout))
    return deadline


def body_deadline(
    start: float, received: int, timeout: float, min_rate: int, last_progress: float
) -> float:
    """When a request body begun at ``start``, ``received`` bytes of it here, is late.

    ``last_progress`` is the time bytes were last seen arriving (``start``
    until then).
    """
    stalled = last_progress + timeout
    if min_rate <= 0:
        return stalled
    return min(start + timeout + received / min_rate, stalled)
