"""The benchmarks reuse the end-to-end fixtures (support.harness)."""

from support.harness import e2e_bus, grid_node, harness, mnist_bytes, mocks

__all__ = ["e2e_bus", "grid_node", "harness", "mnist_bytes", "mocks"]
