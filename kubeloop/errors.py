"""Domain errors shared by pipeline steps, the server and the CLI.

Each error says which HTTP status it would mean, so the one handler in ``serving`` and the CLI
can map it without knowing the business logic. Messages say what to do next.
"""

from __future__ import annotations


class KubeloopError(Exception):
    """Base class: a failure the user can act on (never a bug)."""

    status_code = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SpecError(KubeloopError):
    """The project spec is invalid; the message names the key."""

    status_code = 422


class DataQualityError(KubeloopError):
    """A dataset broke the spec's schema or quality rules; ``report`` lists what broke."""

    status_code = 422

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class ModelNotFoundError(KubeloopError):
    """No registry version carries the requested alias or version."""

    status_code = 404


class PromotionError(KubeloopError):
    """A promotion was refused (no approval, unknown version)."""

    status_code = 409
