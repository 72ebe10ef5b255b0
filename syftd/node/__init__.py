"""The local PyGrid-compatible node (``syftd node serve``, alias ``syftd grid serve``): the server side.

The worker's side of PyGrid (client, wire format, answers, speed test, token) lives in ``syftd.grid``;
this package imports from it, never the other way round. Importing the package itself loads nothing:
``node`` needs numpy (the ``node`` extra), ``mnist`` needs torch.
"""

from __future__ import annotations

__all__: list[str] = []
