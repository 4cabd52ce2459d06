"""Training: one loop (loop.py) over two framework adapters (keras_adapter, torch_adapter)."""
