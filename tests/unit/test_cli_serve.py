"""`kubeloop serve` refuses bad settings in one line per problem, naming the setting, before
it starts anything."""

from __future__ import annotations

from typer.testing import CliRunner

from kubeloop.cli.main import app


def test_prod_without_a_token_is_refused_in_plain_words(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("KUBELOOP_ENV", "prod")
    monkeypatch.delenv("KUBELOOP_API_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: KUBELOOP_API_TOKEN is required when KUBELOOP_ENV=prod")
    assert "Value error" not in result.stderr and "Traceback" not in result.output


def test_an_invalid_option_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: port: ")
