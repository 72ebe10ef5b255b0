"""The benchmarks reuse the end-to-end fixtures (support.harness)."""

from support.harness import grid_node, harness, mnist_bytes

__all__ = ["grid_node", "harness", "mnist_bytes"]
