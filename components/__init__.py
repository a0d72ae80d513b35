"""Pipeline steps of the kubeloop training loop.

Each step is a package: ``core.py`` holds plain functions with plain arguments (tested without
kfp), ``component.py`` holds only the kfp component that adapts them to Kubeflow Pipelines.
Cross-cutting pieces shared by every process (spec, settings, naming, errors) sit beside them.
"""
