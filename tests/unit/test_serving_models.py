"""The model repository: load, swap atomically, keep the old model when a new one fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.dummy import DummyRegressor

from serving.metrics import Metrics
from serving.models import (
    CANARY_TAG,
    ModelLoadError,
    ModelRepository,
    ServedModel,
    build_snapshot,
    check_model,
)
from tests.utils.serving import FakeRegistry, loaded_model

FEATURES = ["a", "b", "c"]


def constant(value: float, features=FEATURES, version: str = "1"):
    model = DummyRegressor(strategy="constant", constant=value).fit(
        np.zeros((2, len(features))), [0.0, 0.0]
    )
    return loaded_model(model, features, version=version)


def registry(**aliases) -> FakeRegistry:
    return FakeRegistry(
        "demo",
        {"1": constant(1.0), "2": constant(2.0, version="2"), "3": constant(3.0, version="3")},
        aliases or {"champion": "1", "challenger": "2"},
    )


def repository(reg: FakeRegistry, **options) -> ModelRepository:
    metrics = Metrics([0, 1, 2])
    return ModelRepository(lambda: reg, "demo", metrics=metrics, loader=reg.load, **options)


def sample(metric, *labels) -> float:
    return metric.labels(*labels)._value.get() if labels else metric._value.get()


def test_repository_loads_the_champion_and_is_ready():
    repo = repository(registry())
    assert not repo.state.ready
    assert repo.poll_once()
    assert repo.state.ready and repo.state.champion.label == "V1.0.0"
    assert repo.state.candidate is None  # no shadow, no canary: the challenger is not loaded
    assert repo.state.input_features == tuple(FEATURES)
    assert sample(repo.metrics.model_ready) == 1


def test_moving_the_champion_alias_swaps_the_whole_snapshot():
    reg = registry()
    repo = repository(reg)
    repo.poll_once()
    before = repo.state
    reg.aliases["champion"] = "3"
    assert repo.poll_once()
    after = repo.state
    assert after is not before and after.champion.version == "3"
    assert before.champion.version == "1"  # in-flight requests keep their snapshot intact
    assert not repo.poll_once()  # nothing moved: no swap


def test_a_version_that_fails_to_load_leaves_the_old_one_serving():
    reg = registry()
    reg.broken.add("3")
    repo = repository(reg)
    repo.poll_once()
    failures = sample(repo.metrics.model_load_failures, "champion")
    reg.aliases["champion"] = "3"
    assert not repo.poll_once()
    assert repo.state.champion.version == "1"
    assert sample(repo.metrics.model_load_failures, "champion") == failures + 1
    assert "version 3 failed to load" in repo.last_error["champion"]
    reg.aliases["champion"] = "1"  # moving back to the serving version clears the error
    repo.poll_once()
    assert "champion" not in repo.last_error
    reg.broken.clear()
    reg.aliases["champion"] = "3"
    assert repo.poll_once() and repo.state.champion.version == "3"
    assert "champion" not in repo.last_error


def test_a_model_without_its_feature_list_is_refused():
    model = constant(1.0)
    model = type(model)(**{**model.__dict__, "metadata_features": []})
    with pytest.raises(ModelLoadError, match="no 'features'"):
        check_model(ServedModel(model, "champion"), None)


def test_a_model_needing_features_the_store_lacks_is_refused():
    with pytest.raises(ModelLoadError, match="lacks"):
        check_model(
            ServedModel(constant(1.0), "champion"), lambda names: "the feature service lacks ['c']"
        )


def test_shadow_loads_the_challenger_as_candidate():
    repo = repository(registry(), shadow=True)
    repo.poll_once()
    assert repo.state.shadow_active and repo.state.candidate.version == "2"


def test_candidate_equal_to_champion_is_not_loaded_twice():
    repo = repository(registry(champion="2", challenger="2"), shadow=True)
    repo.poll_once()
    assert repo.state.champion.version == "2" and repo.state.candidate is None


def test_promoting_the_challenger_reuses_the_loaded_model():
    reg = registry()
    repo = repository(reg, shadow=True)
    repo.poll_once()
    calls = reg.calls
    candidate = repo.state.candidate
    reg.aliases["champion"] = "2"
    repo.poll_once()
    assert repo.state.champion.loaded is candidate.loaded  # no second load from the registry
    assert reg.calls == calls + 1


def test_canary_weight_is_stored_on_the_registered_model_for_one_version():
    reg = registry()
    repo = repository(reg)
    repo.poll_once()
    state = repo.set_canary_weight(0.2)
    assert state.canary_active and state.candidate.version == "2"
    assert json.loads(reg.tags[CANARY_TAG]) == {"weight": 0.2, "version": "2"}
    # Another worker or replica reading the registry gets the same weight.
    other = repository(reg)
    other.poll_once()
    assert other.state.canary_weight == 0.2
    # A new challenger starts from the configured weight again, not from the old rollout.
    reg.aliases["challenger"] = "3"
    other.poll_once()
    assert other.state.canary_weight == 0.0 and other.state.candidate is None


def test_rollback_sets_the_canary_weight_to_zero():
    reg = registry()
    repo = repository(reg, canary_weight=0.5)
    repo.poll_once()
    assert repo.state.canary_weight == 0.5
    assert repo.set_canary_weight(0.0).canary_weight == 0.0
    assert not repo.state.canary_active


def test_canary_without_a_challenger_is_refused():
    repo = repository(registry(champion="1"))
    repo.poll_once()
    with pytest.raises(LookupError):
        repo.set_canary_weight(0.1)


def test_snapshot_maps_candidate_columns_into_the_champion_order():
    champion = ServedModel(constant(1.0, ["a", "b"]), "champion")
    candidate = ServedModel(constant(2.0, ["c", "a"], version="2"), "challenger")
    state = build_snapshot(champion, candidate, 0.5, False)
    assert state.input_features == ("a", "b", "c")
    X = np.array([[1.0, 2.0, 3.0]])
    assert state.inputs_for(champion, X).tolist() == [[1.0, 2.0]]
    assert state.inputs_for(candidate, X).tolist() == [[3.0, 1.0]]


def test_registry_outage_keeps_serving():
    reg = registry()
    repo = repository(reg)
    repo.poll_once()

    def down(name):
        raise ConnectionError("tracking server unreachable")

    reg.get_registered_model = down
    assert not repo.poll_once()
    assert repo.state.ready and "unreachable" in repo.last_error["registry"]
