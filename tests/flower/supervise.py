"""A stand-in daemon for the kill -9 test: supervises one SuperNode and prints its pid once joined.

Usage: python supervise.py EXECUTABLE SUPERLINK DIR RUNTIME_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from syftd.flower.command import SupernodeSpec
from syftd.flower.session import Phase
from syftd.flower.supervisor import SupernodeSupervisor


async def main() -> None:
    executable, superlink, where, port = sys.argv[1:5]
    spec = SupernodeSpec(
        executable=Path(executable), superlink=superlink, stop_file=Path(where) / "stop",
        flwr_home=Path(where) / "home", runtime_port=int(port), insecure=True,
    )  # fmt: skip
    joined = asyncio.Event()
    supervisor = SupernodeSupervisor(
        spec,
        job="driver",
        expiry_grace_s=1.0,
        on_change=lambda: joined.set() if supervisor.phase is Phase.JOINED else None,
    )
    supervisor.join()
    await joined.wait()
    assert supervisor.process is not None
    print(json.dumps({"pid": supervisor.process.pid, "node_id": supervisor.reader.node_id}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
