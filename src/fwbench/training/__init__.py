"""Training: one loop (loop.py) over the framework adapters (each framework module's `Adapter`, fwbench.frameworks)."""
