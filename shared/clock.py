"""Clocks are injected (tests move them by hand): a callable returning seconds.

Monotonic clocks time intervals on one node (liveness, rate windows); wall clocks stamp what is
compared across processes (leases, webhook due times, HTTP signature timestamps).
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
