"""The soak uses the end-to-end fixtures of support.harness."""

from support.harness import grid_node, harness, mnist_bytes

__all__ = ["grid_node", "harness", "mnist_bytes"]
