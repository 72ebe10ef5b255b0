"""The ClientApp: local SGD steps, checking syftd's stop file before each one.

When syftd asks the node to stop (power lost, schedule over, machine going to sleep), the loop
leaves at the next step and either returns the update trained so far, weighted by the steps it
really did (``on-stop = "partial"``, FedAvg still uses it), or raises with syftd's reason
(``on-stop = "raise"``, the ServerApp logs it as a failure). ``on-stop = "ignore"`` stands for an app
that does not check: syftd then terminates the SuperNode when the grace is over.
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from syftd_example.syftd_stop import should_stop, stop_request
from syftd_example.task import partition, sgd_step

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train from the global weights; leave early when told to."""
    weights = [a.copy() for a in msg.content["arrays"].to_numpy_ndarrays()]
    x, y = partition(int(context.node_config.get("partition-id", 0)))
    cfg = context.run_config
    steps, pause, lr = int(cfg["local-steps"]), float(cfg["step-seconds"]), float(cfg["learning-rate"])
    done, loss = 0, 0.0
    print(f"syftd-example: training {steps} steps", flush=True)
    for _ in range(steps):
        if cfg["on-stop"] != "ignore" and should_stop(context):
            request = stop_request(context)
            reason = request.reason if request else "unknown"
            if cfg["on-stop"] == "raise" or done == 0:
                raise RuntimeError(f"syftd: stopped after {done} of {steps} steps ({reason})")
            print(f"syftd: stopping after {done} of {steps} steps ({reason}); returning a partial update")
            break
        loss = sgd_step(weights, x, y, lr)
        done += 1
        time.sleep(pause)  # stands in for a real batch's cost, so a stop can land mid-round
    # weight the update by the work really done: a partial update counts for less in FedAvg
    metrics = MetricRecord({"num-examples": len(y) * done // steps, "train-loss": loss, "steps": done})
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Mean squared error of the global weights on this node's data."""
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    x, y = partition(int(context.node_config.get("partition-id", 0)))
    loss = float(((x @ w + b[0] - y) ** 2).mean())
    return Message(
        content=RecordDict({"metrics": MetricRecord({"num-examples": len(y), "eval-loss": loss})}), reply_to=msg
    )
