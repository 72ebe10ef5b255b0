"""The worker's side of PyGrid: the wire format, the client, its answers, speed test, timeouts and token.

The local PyGrid-compatible node (the server side) is ``syftd.node``; nothing here imports it.
"""
