"""The end-to-end fixtures live in support.harness (the benchmarks use them too)."""

from support.harness import e2e_bus, grid_node, harness, mnist_bytes, mocks

__all__ = ["e2e_bus", "grid_node", "harness", "mnist_bytes", "mocks"]
