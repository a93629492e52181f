"""The comparison methods of the paper, one module each, registered by name (see methods/registry.py)."""
