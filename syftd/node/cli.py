"""``syftd node …`` (alias ``syftd grid …``): run the local PyGrid-compatible node from the command line.

Owns the ``serve`` arguments (address, revision, store directory and cache, speed-test size, averaging
delay, hosting the MNIST process with its client and server config), the one-line refusal when the
``node`` extra is not installed, the "listening on URL" line that scripts and tests read from stdout
(under ``--json`` a ``grid_node.listening`` log line, every other line JSON too, and the refusals
``grid_node.start_failed`` lines, all through ``syftd.log`` as the daemon's ``run --json``), a clean
stop on SIGTERM/SIGINT, and the served process's malloc setting that keeps its memory flat
over cycles. Does not own the node (``node``, imported only once the arguments are read, because it
needs numpy) or the MNIST process (``mnist``, imported only for ``--host-mnist`` because it needs torch).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import platform
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syftd import events, log
from syftd.node.options import DEFAULT_AVERAGING_DELAY_S, DEFAULT_CACHE_BYTES, NodeOptions, Revision

if TYPE_CHECKING:
    from syftd.node.node import GridNode

__all__ = ["EX_UNAVAILABLE", "LISTENING", "NEEDS_EXTRA", "main"]

LISTENING = "syftd grid node listening on"
NEEDS_EXTRA = "syftd node: the local node needs the 'node' extra (numpy): pip install 'syftd[node]'"
EX_UNAVAILABLE = 69
"""sysexits' EX_UNAVAILABLE: the node cannot run in this installation."""
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_log = log.get_logger("syftd.node")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syftd node", description="A local PyGrid-compatible node (also reachable as `syftd grid`)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve model-centric FL over HTTP and WebSocket")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="TCP port; 0 picks a free one (default 5000)")
    serve.add_argument(
        "--revision",
        choices=[r.value for r in Revision],
        default=Revision.PG_DEV.value,
        help="PyGrid revision to imitate on the wire (default pg-dev)",
    )
    serve.add_argument(
        "--prefix",
        choices=["model-centric", "model_centric", "federated"],
        default="model-centric",
        help="route and message prefix; the older two imitate 2020 nodes before 07-29",
    )
    serve.add_argument(
        "--checkpoint-dir",
        "--store-dir",
        type=Path,
        help="the node's store: every checkpoint and diff on disk (default: a temporary directory removed at exit)",
    )
    serve.add_argument(
        "--cache-mb", type=float, default=DEFAULT_CACHE_BYTES / 2**20, help="memory for recently used checkpoints"
    )
    serve.add_argument("--speed-test-mb", type=float, default=4.0, help="size of the speed-test download")
    serve.add_argument(
        "--averaging-delay",
        type=float,
        default=DEFAULT_AVERAGING_DELAY_S,
        metavar="SECONDS",
        help=f"evaluate a cycle this long after answering its report (default {DEFAULT_AVERAGING_DELAY_S}, as PyGrid)",
    )
    serve.add_argument("--no-test-controls", action="store_true", help="do not serve the /_test/ controls")
    serve.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    serve.add_argument(
        "--json",
        action="store_true",
        help="JSON lines on stdout: the start-up line (grid_node.listening: url, host, port, pid), logs and "
        "refusals (overrides --log-format)",
    )
    mnist = serve.add_argument_group("the MNIST process (--host-mnist)")
    mnist.add_argument("--host-mnist", action="store_true", help='host the MNIST process as "mnist" "1.0"')
    mnist.add_argument("--name", default="mnist")
    mnist.add_argument("--model-version", default="1.0")
    mnist.add_argument("--seed", type=int, default=0)
    mnist.add_argument("--batch-size", type=int, default=64)
    mnist.add_argument("--lr", type=float, default=0.005)
    mnist.add_argument("--max-updates", type=int, default=100)
    mnist.add_argument("--cycle-length", type=float, default=60.0, help="seconds (default 60)")
    mnist.add_argument("--num-cycles", type=int, default=5, help="0 = unlimited (default 5)")
    mnist.add_argument("--min-diffs", type=int, default=1)
    mnist.add_argument("--max-diffs", type=int, default=1)
    mnist.add_argument("--min-upload-speed", type=float, help="ask workers for a speed test; minimum upload")
    mnist.add_argument("--min-download-speed", type=float, help="ask workers for a speed test; minimum download")
    mnist.add_argument("--jwt-secret", help="require HS256 tokens signed with this secret")
    mnist.add_argument("--jwt-pub-key", type=Path, help="require RS256 tokens; PEM public key file")
    return parser


def main(argv: Sequence[str]) -> int:
    """``syftd node ARGS``; returns the exit status (69 without the ``node`` extra)."""
    args = _parser().parse_args(list(argv))
    if args.command != "serve":
        _parser().print_help()
        return 2
    if args.averaging_delay < 0:
        _parser().error(f"--averaging-delay must be >= 0 seconds, got {args.averaging_delay}")
    if args.cache_mb < 0:
        _parser().error(f"--cache-mb must be >= 0, got {args.cache_mb}")
    log.configure("json" if args.json else args.log_format)
    try:
        from syftd.node.node import GridNode, HostingRefused
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "numpy":
            raise
        return _refuse(args, NEEDS_EXTRA, EX_UNAVAILABLE)
    _large_buffers_back_to_the_os()
    options = NodeOptions(
        revision=Revision(args.revision),
        prefix=args.prefix,
        checkpoint_dir=args.checkpoint_dir,
        cache_bytes=int(args.cache_mb * 2**20),
        speed_test_bytes=int(args.speed_test_mb * 1024 * 1024),
        test_controls=not args.no_test_controls,
        averaging_delay_s=args.averaging_delay,
    )
    try:
        return asyncio.run(_serve(GridNode(options), args))
    except HostingRefused as exc:
        return _refuse(args, f"syftd node: cannot host the MNIST process: {exc}", 1)
    except OSError as exc:
        return _refuse(args, f"syftd node: cannot listen on {args.host}:{args.port}: {exc}", 1)


def _refuse(args: argparse.Namespace, message: str, status: int) -> int:
    """Say why the node does not serve: one line on stderr, or one JSON log line under ``--json``."""
    if args.json:
        _log.error(events.GRID_NODE_START_FAILED, problem=message.removeprefix("syftd node: "), exit_status=status)
    else:
        sys.stderr.write(message + "\n")
    return status


def _large_buffers_back_to_the_os() -> bool:
    """Have glibc map every allocation above 128 KiB on its own, so freed model-sized buffers go back to the
    OS at once; without it glibc raises the threshold as such buffers are freed and serves them from a
    heap that fragments and grows over the cycles. True if set (glibc only)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


async def _serve(node: GridNode, args: argparse.Namespace) -> int:
    if args.host_mnist:
        _host_mnist(node, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start(args.host, args.port)
    try:
        if args.json:
            hosted = [args.name] if args.host_mnist else []
            where = {"url": node.url, "host": args.host, "port": node.port, "pid": os.getpid()}
            _log.info(events.GRID_NODE_LISTENING, **where, revision=args.revision, prefix=args.prefix, hosted=hosted)
        else:
            sys.stdout.write(f"{LISTENING} {node.url}\n")
            sys.stdout.flush()
        await stop.wait()
    finally:
        await node.stop()
    return 0


def _host_mnist(node: GridNode, args: argparse.Namespace) -> None:
    from syftd.node.mnist import build_mnist_process

    server: dict[str, Any] = {
        "cycle_length": args.cycle_length,
        "num_cycles": args.num_cycles,
        "min_diffs": args.min_diffs,
        "max_diffs": args.max_diffs,
    }
    if args.min_upload_speed is not None:
        server["minimum_upload_speed"] = args.min_upload_speed
    if args.min_download_speed is not None:
        server["minimum_download_speed"] = args.min_download_speed
    auth: dict[str, Any] = {}
    if args.jwt_secret:
        auth["secret"] = args.jwt_secret
    if args.jwt_pub_key:
        auth["pub_key"] = args.jwt_pub_key.read_text()
    if auth:
        server["authentication"] = {"type": "jwt", **auth}
    model, plans, client_config, server_config = build_mnist_process(
        args.seed,
        args.batch_size,
        args.lr,
        args.max_updates,
        name=args.name,
        version=args.model_version,
        server_config=server,
    )
    node.host(args.name, args.model_version, model, plans, client_config, server_config)
