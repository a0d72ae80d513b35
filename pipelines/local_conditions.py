"""Conditions (``dsl.If``) for kfp.local: the register step runs only when the gate passed.

kfp 2.16.1's local orchestrator evaluates a task's trigger condition itself, and gets every
condition on a task output wrong: it resolves ``pipelinechannel--<task>-<output>`` only for an
output named ``Output`` (anything else is looked up as a pipeline input, fails, and the condition
is False), and it then ``eval``s the IR's expression as Python, where
``inputs.parameter_values[...]`` and ``true`` do not exist. So under kfp.local the branch was
always skipped, whatever the gate said. ``conditions_evaluated()`` puts a correct evaluator in
its place for the duration of a local run; KFP's backend evaluates the same IR itself. Upstream:
kubeflow/pipelines#13313 (a CEL evaluator for kfp.local, open as of 2026-12); remove this
once the pinned kfp ships it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

# inputs.parameter_values['pipelinechannel--evaluate-passed'] and the like.
REFERENCE = re.compile(r"inputs\.parameter_values\['pipelinechannel--([A-Za-z0-9_\-]+)'\]")
LITERALS = {"true": "True", "false": "False", "null": "None"}


def evaluate(condition: str, resolve: Callable[[str], Any]) -> bool:
    """Evaluate a KFP IR condition: ``resolve`` gives a channel's value (``evaluate-passed``);
    the rest is comparisons and ``&&``/``||``/``!`` over literals, as the compiler writes them."""
    if not condition.strip():
        return True
    expr = REFERENCE.sub(lambda m: repr(resolve(m.group(1))), condition)
    expr = re.sub(r"\b(true|false|null)\b", lambda m: LITERALS[m.group(1)], expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    return bool(eval(expr, {"__builtins__": {}}, {}))  # the IR we compiled, no names


def resolver(io_store) -> Callable[[str], Any]:
    """A channel's value from kfp.local's IOStore: ``<task>-<output>`` (task names may hold
    dashes: the longest task name that has that output wins), else a pipeline input."""

    def resolve(channel: str) -> Any:
        dashes = [i for i, c in enumerate(channel) if c == "-"]
        for i in reversed(dashes):
            try:
                return io_store.get_task_output(channel[:i], channel[i + 1 :])
            except (KeyError, ValueError):
                continue
        try:  # the root DAG keeps its inputs by name, a nested one by channel
            return io_store.get_parent_input(channel)
        except ValueError:
            return io_store.get_parent_input(f"pipelinechannel--{channel}")

    return resolve


@contextlib.contextmanager
def conditions_evaluated() -> Iterator[None]:
    """kfp.local evaluates ``dsl.If`` conditions correctly inside this block."""
    from kfp.local.orchestrator import enhanced_dag_orchestrator as orchestrator

    evaluator = orchestrator.ConditionEvaluator
    original = evaluator.__dict__["evaluate_condition"]
    evaluator.evaluate_condition = staticmethod(  # type: ignore[method-assign]
        lambda condition, io_store: evaluate(condition, resolver(io_store))
    )
    try:
        yield
    finally:
        evaluator.evaluate_condition = original  # type: ignore[method-assign]
