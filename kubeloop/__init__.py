"""kubeloop: the command line, the demo and the core every other package shares.

The core (spec, settings, errors, registry rules, model store, feature store, data versions,
metrics, images, sample data) imports nothing from ``components``, ``pipelines``, ``serving`` or
``monitoring``; ``kubeloop.cli`` and ``kubeloop.demo`` sit on top of everything and nothing but
the entry points imports them (tests/unit/test_import_graph.py).
"""
