"""Domain errors of monitoring and rollout (each names the HTTP status it would mean)."""

from __future__ import annotations

from kubeloop.errors import KubeloopError


class ReferenceMissingError(KubeloopError):
    """The champion's MLflow run holds no reference sample to compare with."""

    status_code = 409


class LaunchError(KubeloopError):
    """A retraining run could not be started (pipeline failed, KFP unreachable)."""

    status_code = 502


class SupersededWhileStarting(LaunchError):
    """A newer trigger took the launch slot while this run was starting: the run was stopped
    rather than left running beside the newer one (one run per model at a time)."""

    status_code = 409


class RolloutError(KubeloopError):
    """A rollout step cannot proceed (no candidate, server unreachable, wrong state)."""

    status_code = 409
