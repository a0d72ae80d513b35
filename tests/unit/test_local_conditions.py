"""kfp.local evaluates the pipeline's conditions the way KFP does (kfp 2.16.1's own evaluator
skips every branch conditioned on a task output)."""

from __future__ import annotations

import pytest
from kfp.local import io

from pipelines.local_conditions import conditions_evaluated, evaluate, resolver

GATE = "inputs.parameter_values['pipelinechannel--evaluate-passed'] == true"


@pytest.mark.parametrize(("passed", "runs"), [(True, True), (False, False)])
def test_the_gate_condition_follows_the_evaluate_steps_output(passed: bool, runs: bool) -> None:
    values = io.IOStore()
    values.put_task_output("evaluate", "passed", passed)
    values.put_task_output("evaluate", "verdict", "{}")
    assert evaluate(GATE, resolver(values)) is runs


def test_task_names_with_dashes_and_the_compilers_operators() -> None:
    values = io.IOStore()
    values.put_task_output("check-data", "rows", 120)
    values.put_task_output("check-data-quality", "ok", False)
    values.put_parent_input("pipelinechannel--mode", "full")
    resolve = resolver(values)
    rows = "inputs.parameter_values['pipelinechannel--check-data-rows']"
    ok = "inputs.parameter_values['pipelinechannel--check-data-quality-ok']"
    mode = "inputs.parameter_values['pipelinechannel--mode']"
    assert evaluate(f"{rows} > 100 && !{ok}", resolve)
    assert not evaluate(f"{rows} > 100 && {ok} == true", resolve)
    assert evaluate(f"{mode} == 'full' || {ok}", resolve)
    assert evaluate(f"{mode} != 'quick'", resolve)
    assert evaluate("", resolve)


def test_the_replacement_holds_only_inside_the_block() -> None:
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    values = io.IOStore()
    values.put_task_output("evaluate", "passed", True)
    assert ConditionEvaluator.evaluate_condition(GATE, values) is False  # kfp's own: wrong
    with conditions_evaluated():
        assert ConditionEvaluator.evaluate_condition(GATE, values) is True
    assert ConditionEvaluator.evaluate_condition(GATE, values) is False
