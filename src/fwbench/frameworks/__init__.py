"""Everything framework-specific, one module per framework; `registry` maps a config name to its module."""
