"""V<tag>.<manual>.<auto>: auto counts retrainings and restarts with a new revision."""

from __future__ import annotations

from types import SimpleNamespace

from kubeloop.registry import (
    TAG_AUTO,
    TAG_MANUAL,
    TAG_MODEL_TAG,
    next_auto_revision,
    version_name,
)


def version(tag: int, manual: int, auto: int):
    return SimpleNamespace(
        tags={TAG_MODEL_TAG: str(tag), TAG_MANUAL: str(manual), TAG_AUTO: str(auto)}
    )


def test_version_name_format():
    assert version_name(1, 0, 3) == "V1.0.3"


def test_first_version_gets_auto_zero():
    assert next_auto_revision([], 1, 0) == 0


def test_retraining_increments_auto():
    assert next_auto_revision([version(1, 0, 0), version(1, 0, 1)], 1, 0) == 2


def test_new_manual_revision_resets_auto():
    assert next_auto_revision([version(1, 0, 0), version(1, 0, 1)], 1, 1) == 0


def test_other_tags_do_not_count():
    assert next_auto_revision([version(2, 0, 5), version(1, 1, 7)], 1, 0) == 0


def test_versions_without_kubeloop_tags_are_ignored():
    assert next_auto_revision([SimpleNamespace(tags={})], 1, 0) == 0
