"""syftd: a federated-learning worker daemon that trains only when it costs its owner nothing."""

__version__ = "0.1.0"
