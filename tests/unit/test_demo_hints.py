"""What the demo prints for the user to type next."""

from __future__ import annotations

from pathlib import Path

from kubeloop.demo import command_path


def test_the_cli_is_named_as_the_user_types_it_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert command_path(tmp_path / ".venv" / "bin" / "kubeloop") == ".venv/bin/kubeloop"
    assert command_path(Path("/opt/venv/bin/kubeloop")) == "/opt/venv/bin/kubeloop"
