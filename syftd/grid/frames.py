"""The JSON text of a report, built around the base64 diff instead of through ``json.dumps``.

A report carries the diff as one standard padded base64 string (docs/protocol.md §2.6), 1.67 MB for MNIST.
``json.dumps`` would scan that string again for characters to escape; base64's alphabet has none, so
the text here is the JSON of the small fields with the base64 spliced in: byte for byte what
``json.dumps`` gives for the same object (a test compares them). Owns those bytes and the streaming
base64 of a diff file. Pure except where it reads the diff file it is given (off the event loop in
the async functions); does not own sending (syftd.grid.client).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "b64_length",
    "encode_file_into",
    "file_b64_chunks",
    "read_b64_chunk",
    "report_frame",
    "report_parts",
    "streamed_report",
    "whole_report",
]

_RAW_CHUNK = 3 * 64 * 1024  # a multiple of 3: chunked base64 joins into the one-piece encoding
WHOLE_BODY_MAX = 4 * 1024 * 1024
"""A diff file up to this size is reported over HTTP as one body built in one trip to a worker thread
(at most 5.4 MiB of base64 held); a larger one is streamed in ``_STREAM_CHUNK`` pieces."""
_STREAM_CHUNK = 3 * 256 * 1024  # 768 KiB per trip: an MNIST diff in two, 1 MiB of base64 held at most


def report_parts(
    worker_id: str, request_key: str, *, ws_type: str | None = None, request_id: str | None = None
) -> tuple[bytes, bytes]:
    """The JSON text before and after the diff's base64.

    ``ws_type`` None: the flat HTTP body ``{"worker_id", "request_key", "diff"}``; otherwise the WS
    envelope ``{"type", "data": {…}, "request_id"}`` around it.
    """
    data = f'{{"worker_id": {json.dumps(worker_id)}, "request_key": {json.dumps(request_key)}, "diff": "'
    if ws_type is None:
        return data.encode(), b'"}'
    head = f'{{"type": {json.dumps(ws_type)}, "data": {data}'
    return head.encode(), f'"}}, "request_id": {json.dumps(request_id)}}}'.encode()


def report_frame(
    worker_id: str, request_key: str, diff: bytes, *, ws_type: str | None = None, request_id: str | None = None
) -> bytes:
    """The whole report text for ``diff`` (raw State bytes), as :func:`report_parts` frames it."""
    head, tail = report_parts(worker_id, request_key, ws_type=ws_type, request_id=request_id)
    return b"".join((head, base64.b64encode(diff), tail))


def b64_length(raw_size: int) -> int:
    """Length of the padded base64 of ``raw_size`` bytes."""
    return 4 * ((raw_size + 2) // 3)


def file_b64_chunks(path: Path) -> Iterator[bytes]:
    """The base64 of a file's bytes in pieces of 256 KiB, reading 192 KiB at a time.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as source:
        while chunk := source.read(_RAW_CHUNK):
            yield base64.b64encode(chunk)


def read_b64_chunk(source: BinaryIO, size: int = _RAW_CHUNK) -> bytes:
    """The base64 of the next ``size`` bytes of ``source`` (a multiple of 3; 192 KiB unless given; b"" at its end)."""
    chunk = source.read(size)
    return base64.b64encode(chunk) if chunk else b""


def encode_file_into(path: Path, head: bytes, tail: bytes, expected: int | None = None) -> bytearray:
    """``head + base64(file) + tail`` in one buffer filled piecewise (peak: the frame plus 448 KiB).

    Raises:
        OSError: the file cannot be read, is not ``expected`` bytes, or changed size while being read.
    """
    size = path.stat().st_size
    if expected is not None and size != expected:
        raise OSError(f"{path} has {size} bytes, not the {expected} of the diff")
    frame = bytearray(len(head) + b64_length(size) + len(tail))
    frame[: len(head)] = head
    at = len(head)
    for piece in file_b64_chunks(path):
        frame[at : at + len(piece)] = piece
        at += len(piece)
    if at != len(frame) - len(tail):
        raise OSError(f"{path} changed size while it was being read")
    frame[at:] = tail
    return frame


async def whole_report(head: bytes, diff: bytes | Path, tail: bytes, size: int | None = None) -> bytes | bytearray:
    """The whole report text; from a file (of ``size`` bytes, when given), filled piecewise into one
    buffer off the event loop."""
    if isinstance(diff, bytes):
        return b"".join((head, base64.b64encode(diff), tail))
    return await asyncio.to_thread(encode_file_into, diff, head, tail, size)


async def streamed_report(head: bytes, path: Path, tail: bytes, size: int) -> AsyncIterator[bytes]:
    """The report text in pieces, the diff file read and encoded ``_STREAM_CHUNK`` bytes per trip off the
    loop (each trip to a worker thread costs; the memory held is bounded by the chunk, not the diff).

    Raises:
        OSError: the file is not ``size`` bytes (the request's length was announced from ``size``;
            the report may go out while the spool commit that checks the size still runs).
    """
    read = 0
    yield head
    source = await asyncio.to_thread(open, path, "rb")
    try:
        while piece := await asyncio.to_thread(read_b64_chunk, source, _STREAM_CHUNK):
            read += len(piece) // 4 * 3 - piece[-2:].count(b"=")
            if read > size:
                raise OSError(f"{path} has more than the {size} bytes the report announced")
            yield piece
    finally:
        source.close()
    if read != size:
        raise OSError(f"{path} has fewer than the {size} bytes the report announced")
    yield tail
