"""The models both frameworks build: architecture.py reads a model's layers from its
config (config/model/<name>.yaml) and computes shapes and FLOPs; the builders are
in fwbench.frameworks.<name>.build_model."""
