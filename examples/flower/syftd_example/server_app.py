"""The ServerApp: FedAvg set up for a federation with constraint-gated nodes.

``min_available_nodes`` and ``min_train_nodes`` are the number of nodes that are reliably online
(``min-nodes``), not the federation's size: a round never waits without limit for a laptop that was
unplugged. ``start(timeout=…)`` bounds each round's wait for replies, so a node that vanished
without leaving (killed, suspended) costs at most that. A node that syftd stops leaves gracefully:
its outstanding message is answered with an error at once and the round goes on with the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from syftd_example.task import initial_weights

app = ServerApp()


class ReportingFedAvg(FedAvg):
    """FedAvg that appends one JSON line per round to ``report_file`` (when set): who was asked,
    who answered, who failed and why, and when."""

    def __init__(self, report_file: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.report_file = report_file
        self._asked: dict[int, tuple[float, list[int]]] = {}

    def _report(self, **fields: object) -> None:
        if self.report_file:
            with open(self.report_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"t": time.time(), **fields}) + "\n")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        nodes = [m.metadata.dst_node_id for m in messages]
        self._asked[server_round] = (time.time(), nodes)
        self._report(event="configure_train", round=server_round, nodes=nodes)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        asked_at, nodes = self._asked.get(server_round, (time.time(), []))
        results = [m.metadata.src_node_id for m in replies if not m.has_error()]
        failures = [
            {"node": m.metadata.src_node_id, "code": m.error.code, "reason": m.error.reason}
            for m in replies
            if m.has_error()
        ]
        steps = {str(m.metadata.src_node_id): m.content["metrics"]["steps"] for m in replies if not m.has_error()}
        self._report(
            event="aggregate_train",
            round=server_round,
            nodes=nodes,
            results=results,
            failures=failures,
            steps=steps,
            seconds=time.time() - asked_at,
        )
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` of FedAvg."""
    cfg = context.run_config
    k = int(cfg["min-nodes"])
    strategy = ReportingFedAvg(
        str(cfg["report-file"]),
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=k,
        min_evaluate_nodes=k,
        min_available_nodes=k,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_weights()),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
    )
    strategy._report(event="done", weights=[a.tolist() for a in result.arrays.to_numpy_ndarrays()])
