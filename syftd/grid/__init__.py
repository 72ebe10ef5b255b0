"""Everything PyGrid: the wire format, the worker client and a PyGrid-compatible local node."""
