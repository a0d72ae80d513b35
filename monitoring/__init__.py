"""Monitoring and the closed loop.

``kubeloop monitor`` (also ``python -m monitoring``, the CronJob's entry point) compares a window
of logged predictions with the champion's training reference using Evidently, exports the
figures as Prometheus metrics, writes an HTML report and decides whether to launch retraining.
``kubeloop rollout`` walks the retrained challenger back into production (shadow, approval,
canary steps, promotion or rollback); ``kubeloop lineage`` shows where a deployed version came
from. The logic lives in plain functions (``window``, ``drift``, ``decide``, ``state``,
``launch``, ``rollout``, ``lineage``); ``cli`` only translates arguments.
"""
