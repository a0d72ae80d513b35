"""The ``kubeloop`` command: the root app (``main``), its support and one module per area."""
