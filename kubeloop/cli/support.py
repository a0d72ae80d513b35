"""What every ``kubeloop`` sub-command shares: the spec option, error handling, set-up."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, overload

import typer
from rich.console import Console
from rich.markup import escape

from kubeloop import registry
from kubeloop.errors import KubeloopError, SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec, load_spec

DEFAULT_SPEC = Path("examples/building_energy/spec.yaml")
SpecOption = Annotated[
    Path, typer.Option("--spec", "-s", envvar="KUBELOOP_SPEC", help="Project spec YAML.")
]
# Progress and errors go to stderr; what a command answers (a report, a status) to stdout,
# through ``out``, so that it can be piped and redirected.
console = Console(stderr=True)
out = Console(soft_wrap=True)  # a path or id is never cut at 80 columns when piped
SettingsT = TypeVar("SettingsT", bound=PlatformSettings)


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors, and the registry's refusals (401, 403), into a readable message and
    exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KubeloopError as exc:
            message = exc.message
        except Exception as exc:  # the registry's refusals; anything else is re-raised
            refused = registry.refusal(exc)
            if refused is None:
                raise
            message = refused
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    return wrapper


@overload
def context(spec_path: Path) -> tuple[ProjectSpec, PlatformSettings]: ...


@overload
def context(
    spec_path: Path, settings_cls: type[SettingsT], **overrides: Any
) -> tuple[ProjectSpec, SettingsT]: ...


def context(
    spec_path: Path, settings_cls: type[PlatformSettings] = PlatformSettings, **overrides: Any
) -> tuple[ProjectSpec, PlatformSettings]:
    """Settings first (they define ${KUBELOOP_WORK_DIR} for the spec), then the spec.

    Options given on the command line (``overrides`` that are not None) win over the
    environment; the settings are exported so child processes (pipeline steps) see them too.
    """
    settings = settings_cls(**{k: v for k, v in overrides.items() if v is not None})
    settings.export_to_environment()
    if spec_path == DEFAULT_SPEC and not spec_path.exists():
        raise SpecError(
            f"no spec given and no {DEFAULT_SPEC} here (the bundled example, found from the "
            "repository's root): pass --spec <project>/spec.yaml or set KUBELOOP_SPEC",
            field="spec",
        )
    return load_spec(spec_path), settings
