"""The jobs: deciding, running and reporting training cycles.

Modules, along the route of one cycle:

- ``manager``: ``JobManager``, the loop that decides (``syftd.policy``) and routes events to cycles;
- ``verbs``: the operator's verbs (trigger, expire, simulate, status, why), mixed into the manager;
- ``runtime``: what the manager keeps per job;
- ``cycle``: one cycle, its only owner (flag, budget, steps, outcome);
- ``states``: a cycle's states, transitions and record;
- ``report``: the one report path for fresh and spooled diffs (probe → report → mark);
- ``view``: the words (``STATUS=``, ``syftd status``, ``syftd why``);
- ``ports``: the Protocols of the collaborators.

The pure core they build on (``syftd.policy``, ``syftd.jobstate``, ``syftd.constraints``,
``syftd.outcomes``, the ``Conditions`` value) lives outside this package and imports no I/O code.
"""

from __future__ import annotations

from syftd.jobs.manager import JobManager

__all__ = ["JobManager"]
