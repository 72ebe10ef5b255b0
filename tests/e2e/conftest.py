"""The end-to-end fixtures live in support.harness (the benchmarks use them too)."""

from support.harness import grid_node, harness, mnist_bytes

__all__ = ["grid_node", "harness", "mnist_bytes"]
