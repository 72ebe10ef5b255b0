"""The margin a wall-clock bound in a test adds to the design's figure, so that it holds on a loaded machine.

A test states the design's figure (a grace, a timeout, an interval) and adds ``LOAD_MARGIN_S``; the
tight figures themselves are measured by the benchmarks under tests/bench. The margin is sized for a
load average of 8 on 2 cores: each runnable process then gets about a quarter of a core, so the few
hundred milliseconds of CPU an exit, a D-Bus round trip or an interpreter's teardown needs on an idle
machine stretch to a second or two (a mid-training SIGTERM took 5.11 s against grace + 1 s = 5.0 s at
load 4–8), and 3 s covers that with room. It is far below every interval it must tell apart (poll
periods of 30 s, the 2 s between SIGTERM and SIGKILL is checked by outcome, not by time).
"""

from __future__ import annotations

__all__ = ["LOAD_MARGIN_S"]

LOAD_MARGIN_S = 3.0
