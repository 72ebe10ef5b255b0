"""The Flower backend: syftd supervises a ``flower-supernode`` so a Flower federation gets a
constraint-gated node (README, "Flower").

``command`` builds the SuperNode's argv and environment (pure), ``config`` holds the ``[job.flower]``
table and its checks, ``session`` the values of one session (output, outcome, sleep grace; pure),
``stopfile`` writes the stop file a cooperating ClientApp reads, ``supervisor`` starts, watches, stops
and restarts the process, ``reaper`` ends it if the daemon dies, and ``run`` is a flower job's run as
the job manager drives it. The daemon never imports flwr: the SuperNode runs from its own virtual
environment (flwr 1.42 needs protobuf < 7, syftd needs ≥ 7).
"""

from __future__ import annotations

__all__: list[str] = []
