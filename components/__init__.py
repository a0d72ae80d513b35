"""The KFP steps of the training pipeline, one package each.

``core.py`` holds plain functions with plain arguments (tested without kfp), ``component.py``
only the kfp component that adapts them to Kubeflow Pipelines. What every process shares (spec,
settings, naming, errors) is in the ``kubeloop`` core.
"""
