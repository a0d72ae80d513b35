"""The spec's monitoring and rollout sections: defaults keep old specs valid, typos fail."""

from __future__ import annotations

import pytest

from kubeloop.errors import SpecError
from kubeloop.spec import dump_spec, parse_spec
from tests.utils.factories import example_spec


def raw_spec(**sections) -> dict:
    data = dump_spec(example_spec())
    data.pop("monitoring"), data.pop("rollout")
    return {**data, **sections}


def test_a_spec_without_monitoring_or_rollout_gets_the_defaults() -> None:
    spec = parse_spec(raw_spec())
    assert spec.monitoring.cooldown_minutes == 360 and spec.monitoring.new_labels is None
    assert [s.weight for s in spec.rollout.steps] == [0.1, 0.5, 1.0]
    assert spec.rollout.auto_approve_dev is False


def test_the_example_spec_sets_thresholds_cooldown_and_steps() -> None:
    spec = example_spec()
    assert spec.monitoring.drift_share == 0.3 and spec.monitoring.cooldown_minutes == 360
    assert spec.rollout.auto_approve_dev and len(spec.rollout.steps) == 3


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"monitoring": {"cooldown_minuts": 5}}, "monitoring.cooldown_minuts"),
        ({"monitoring": {"drift_method": "wassersten"}}, "monitoring.drift_method"),
        ({"monitoring": {"drift_share": 1.5}}, "monitoring.drift_share"),
        ({"rollout": {"steps": [{"weight": 0.5}, {"weight": 0.1}]}}, "rollout"),
        ({"rollout": {"steps": [{"weight": 0.1, "hold": 5}]}}, "rollout.steps.0.hold"),
        ({"rollout": {"steps": []}}, "rollout.steps"),
    ],
)
def test_a_typo_or_bad_value_names_the_key(sections: dict, key: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(raw_spec(**sections))
    assert key in error.value.message
