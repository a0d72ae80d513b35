"""``kubeloop serve``: start the model server (registered in ``kubeloop/cli/main.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def serve(
    spec: Annotated[
        Path | None, typer.Option("--spec", "-s", envvar="KUBELOOP_SPEC", help="Project spec YAML.")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address (default 0.0.0.0; 127.0.0.1 while no API token is set)"),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="uvicorn worker processes")] = None,
    shadow: Annotated[
        bool | None, typer.Option("--shadow/--no-shadow", help="Score the challenger in shadow")
    ] = None,
    canary_weight: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share for the challenger")
    ] = None,
) -> None:
    """Serve the champion over HTTP (predict, V2 inference, features, feedback, metrics).

    Every option can also be set as a KUBELOOP_* environment variable (see docs/serving.md);
    KUBELOOP_API_TOKEN guards the predict, feedback and admin routes.
    """
    from pydantic import ValidationError

    from kubeloop.spec import format_errors
    from serving.server import run
    from serving.settings import ServingSettings

    overrides: dict[str, Any] = {
        "spec": spec,
        "host": host,
        "port": port,
        "workers": workers,
        "shadow_enabled": shadow,
        "canary_weight": canary_weight,
    }
    try:
        settings = ServingSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for line in format_errors(exc).splitlines():
            typer.echo(f"error: {line.strip()}", err=True)
        raise typer.Exit(2) from None
    if settings.token is None and "host" not in settings.model_fields_set:
        # dev without a token: every route is open, so not to the whole network by default
        settings = settings.model_copy(update={"host": "127.0.0.1"})
        typer.echo(
            "no KUBELOOP_API_TOKEN: listening on 127.0.0.1 only (--host 0.0.0.0 opens it)",
            err=True,
        )
    raise typer.Exit(run(settings))
