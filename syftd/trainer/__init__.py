"""Training in a child process; importing this package must not import torch."""
