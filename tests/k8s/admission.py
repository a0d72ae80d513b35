"""A ValidatingAdmissionPolicy's decision on one request, its CEL run by cel-python.

No API server runs here; what this checks is the policy's own logic: its match conditions and
validations, evaluated on the objects the chart renders, the way the API server evaluates them
(every match condition true, then every validation true, else the first failing one's message).
Standard CEL only, which is all the chart's policies use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import celpy


@dataclass(frozen=True)
class Decision:
    applies: bool  # every match condition held
    allowed: bool
    message: str | None = None


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(activation)


def decide(
    policy: dict[str, Any],
    obj: dict[str, Any],
    params: dict[str, Any],
    username: str,
    groups: list[str],
) -> Decision:
    """What ``policy`` says of creating ``obj`` as ``username`` in ``groups``, with ``params``."""
    activation = {
        "object": celpy.json_to_cel(obj),
        "params": celpy.json_to_cel(params),
        "request": celpy.json_to_cel(
            {"operation": "CREATE", "userInfo": {"username": username, "groups": groups}}
        ),
    }
    spec = policy["spec"]
    for condition in spec.get("matchConditions", []):
        if not bool(_evaluate(condition["expression"], activation)):
            return Decision(applies=False, allowed=True)
    for validation in spec["validations"]:
        if not bool(_evaluate(validation["expression"], activation)):
            message = validation.get("message")
            if "messageExpression" in validation:
                message = str(_evaluate(validation["messageExpression"], activation))
            return Decision(applies=True, allowed=False, message=message)
    return Decision(applies=True, allowed=True)
