"""gradnas: gradient-based neural architecture search (DARTS, MiLeNAS, single-level) in PyTorch."""
__version__ = "0.1.0"
