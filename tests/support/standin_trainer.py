"""A torch-free STAND-IN for ``syftd.trainer.worker``: it is not the real trainer and says so.

It speaks the same frame protocol on the same inherited socket, takes the same arguments, checks the
same shared-memory expiration flag between its steps, exits the same way, and returns a real diff
State (every parameter's difference is ``0.001``), checked with ``wire.check_diff`` as the real trainer
checks it (a FAILED result of the same ``failure`` kind when the check refuses it); it trains nothing.
The middle-layer tests run ``syftd.jobs`` against it in-process, where importing torch per cycle
would cost seconds.

Hold points make phases deterministic: with ``SYFTD_STANDIN_GATES=<dir>``, before each phase
(``import``, ``load``, ``train``, ``step<n>``, ``diff``) it looks for ``<dir>/<phase>.hold``; if present it
sends the phase in a datagram to the abstract unix address ``SYFTD_STANDIN_GATE_SOCKET`` and blocks until
the test answers it (SIGTERM ends it meanwhile, as it ends the real trainer): no side polls.
``SYFTD_STANDIN_STEP_S`` sets the time per step and ``SYFTD_STANDIN_DIFF_VALUE`` every value of the diff
(``nan`` makes a NaN diff with finite losses).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from pathlib import Path

from syftd.errors import WireError
from syftd.grid import wire
from syftd.statedir import atomic_write
from syftd.trainer.flag import Expired, ExpiryView
from syftd.trainer.messages import (
    Outcome,
    Preload,
    Progress,
    Request,
    Stage,
    TrainerStage,
    TrainingResult,
    encode,
    failure_of,
    receive_from_daemon,
)

STANDIN = True
"""Marks this module as a stand-in (the tests assert they ran it)."""


def _gate(phase: str) -> None:
    """Hold before ``phase`` if the test asked to: announce it, then block until the test answers."""
    gates, address = os.environ.get("SYFTD_STANDIN_GATES"), os.environ.get("SYFTD_STANDIN_GATE_SOCKET")
    if not gates or not address or not (Path(gates) / f"{phase}.hold").exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("")  # an abstract address of its own, for the answer
        sock.sendto(phase.encode(), "\0" + address)
        sock.recv(16)  # SIGTERM ends the process meanwhile, as it ends the real trainer


def _diff(model: bytes) -> bytes:
    value = float(os.environ.get("SYFTD_STANDIN_DIFF_VALUE", "0.001"))  # "nan": a NaN diff, finite losses
    tensors = []
    for tensor in wire.parse_state(model):
        count = len(tensor.data) // 4
        tensors.append(wire.Tensor(tensor.dtype, tensor.shape, struct.pack(f"<{count}f", *([value] * count))))
    return wire.encode_state(tensors)


def _run(sock: socket.socket, request: Request, step_s: float) -> TrainingResult:
    flag = ExpiryView(request.flag_name)
    losses: list[float] = []
    try:
        flag.check()
        sock.sendall(encode(Stage(TrainerStage.LOADING_DATA)))
        total = request.job.trainer.max_updates or int(request.client_config.get("max_updates", 1))
        sock.sendall(encode(Progress(0, total, None, None, 0, 0.0)))
        _gate("train")
        for step in range(1, total + 1):
            flag.check()
            _gate(f"step{step}")
            time.sleep(step_s)
            losses.append(1.0 / step)
            sock.sendall(encode(Progress(step, total, losses[-1], 0.5, 0, step_s)))
        flag.check()
        sock.sendall(encode(Stage(TrainerStage.WRITING_DIFF)))
        _gate("diff")
        flag.check()
        if request.model_path is None or request.diff_path is None:
            return TrainingResult(Outcome.COMPLETED, diff=_diff(request.model), steps=total, losses=tuple(losses))
        # the file hand-off, as the real trainer does it: model from the file, the diff checked against
        # it (the daemon does not check it again) and written durably
        model = Path(request.model_path).read_bytes()
        diff = _diff(model)
        try:
            wire.check_diff(diff, model)
        except WireError as exc:
            return TrainingResult(
                Outcome.FAILED, steps=total, losses=tuple(losses), error=str(exc), failure=failure_of(exc)
            )
        try:
            atomic_write(Path(request.diff_path), diff)
        except OSError as exc:  # the disk refused the file: the diff comes back in memory, as the real trainer does
            return TrainingResult(
                Outcome.COMPLETED, diff=diff, diff_size=len(diff), steps=total, losses=tuple(losses), error=str(exc)
            )
        return TrainingResult(
            Outcome.COMPLETED,
            steps=total,
            losses=tuple(losses),
            diff_size=len(diff),
            diff_written=True,
        )
    except Expired as exc:
        return TrainingResult(Outcome.EXPIRED, reason=exc.reason, steps=len(losses), losses=tuple(losses))
    finally:
        flag.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="support.standin_trainer")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--idle-exit-s", type=float, default=60.0)
    args, _rest = parser.parse_known_args()
    _gate("import")
    step_s = float(os.environ.get("SYFTD_STANDIN_STEP_S", "0.01"))
    sock = socket.socket(fileno=args.fd)
    while True:
        message = receive_from_daemon(sock, timeout_s=args.idle_exit_s)
        if message is None:
            return 0
        if isinstance(message, Preload):
            sock.sendall(encode(Stage(TrainerStage.LOADING_DATA)))
            _gate("load")
            continue
        assert isinstance(message, Request), message
        result = _run(sock, message, step_s)
        sock.sendall(encode(result))
        if result.outcome is not Outcome.COMPLETED:
            return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)
