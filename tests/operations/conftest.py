"""The operations tests reuse the end-to-end fixtures (support.harness) for the daemon-level checks."""

from support.harness import grid_node, harness, mnist_bytes

__all__ = ["grid_node", "harness", "mnist_bytes"]
