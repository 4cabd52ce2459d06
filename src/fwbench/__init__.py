"""fwbench: a reproducible TensorFlow-vs-PyTorch comparison pipeline."""

__version__ = "0.1.0"
