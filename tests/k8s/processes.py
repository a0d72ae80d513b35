"""What a container command runs, read from the real code: its CLI command or module, and the
environment variables that process reads (settings classes, CLI options, libraries' own)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s.chart import CHART

# Console scripts the images provide, and the click group behind each.
CLI_GROUPS = {
    "kubeloop": ("kubeloop.cli.main", "app"),
    "mlflow": ("mlflow.cli", "cli"),
    "feast": ("feast.cli.cli", "cli"),
}
# kubeloop/cli/ command modules -> the package whose settings their process reads.
CLI_PACKAGES = {"kubeloop.cli.monitor": "monitoring", "kubeloop.cli.serve": "serving"}


@dataclass
class Process:
    """One container's process as the code defines it."""

    description: str
    env: set[str] = field(default_factory=set)  # variables it reads
    problems: list[str] = field(default_factory=list)


def settings_env(cls: Any) -> set[str]:
    """Environment variable names a pydantic-settings class reads (prefix + field, or aliases)."""
    prefix = (cls.model_config.get("env_prefix") or "").upper()
    names = set()
    for name, info in cls.model_fields.items():
        aliases: list[str] = []
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                aliases.append(alias)
            elif alias is not None and hasattr(alias, "choices"):  # AliasChoices
                aliases += [c for c in alias.choices if isinstance(c, str)]
        if aliases:
            names.update(a.upper() for a in aliases)
        else:
            names.add(prefix + name.upper())
    return names


def _settings_classes(package: str) -> list[Any]:
    """PlatformSettings subclasses defined in ``<package>.settings`` (or PlatformSettings)."""
    from kubeloop.settings import PlatformSettings

    if package in ("serving", "monitoring"):
        module = importlib.import_module(f"{package}.settings")
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, PlatformSettings)
            and obj is not PlatformSettings
            and obj.__module__ == module.__name__
        ]
        if not found:
            raise AssertionError(f"{package}/settings.py defines no PlatformSettings subclass")
        return found
    return [PlatformSettings]


def library_env() -> set[str]:
    """Variables MLflow reads itself (mlflow/environment_variables.py)."""
    import mlflow.environment_variables as ev

    return {
        v.name
        for v in vars(ev).values()
        if hasattr(v, "name") and isinstance(v.name, str) and v.name.isupper()
    }


def _click_group(name: str):
    import typer

    module_name, attr = CLI_GROUPS[name]
    group = getattr(importlib.import_module(module_name), attr)
    return typer.main.get_command(group) if isinstance(group, typer.Typer) else group


def resolve_cli(argv: list[str]) -> tuple[Any, list[str]]:
    """The click command an argv reaches, after checking that the arguments parse."""
    command: Any = _click_group(argv[0])
    name, args = argv[0], list(argv[1:])
    # Down the sub-command groups (duck-typed: typer carries its own copy of click).
    while hasattr(command, "resolve_command"):
        ctx = command.make_context(name, args, resilient_parsing=True)
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        if not rest:
            raise AssertionError(f"{argv}: `{name}` needs a sub-command")
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        if sub is None:
            raise AssertionError(f"{argv}: `{name}` has no command {rest[0]!r}")
        command, name, args = sub, sub_name, list(sub_args)
    command.make_context(name, args)  # raises on an unknown option or bad value
    return command, args


def _command_env(command: Any) -> set[str]:
    names = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def _every_command_env(command: Any) -> set[str]:
    """Variables any command of a CLI group reads (its options' envvars)."""
    names = _command_env(command)
    for sub in getattr(command, "commands", {}).values():
        names |= _every_command_env(sub)
    return names


def _module_is_runnable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: needs __main__
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return True


def _script_env(source: str) -> set[str]:
    """os.environ names a Python script reads (os.environ[...], .get(...), os.getenv(...))."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
        ):
            names.add(node.value)
    return names


def describe(
    container: dict[str, Any], pod_spec: dict[str, Any], config_maps: dict[str, dict[str, str]]
) -> Process:
    """The process a container runs and the variables it reads."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        return Process("image entrypoint", problems=["no explicit command"])
    exe = argv[0]

    if exe == "python" and len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        proc = Process(f"python -m {module}")
        if not _module_is_runnable(module):
            proc.problems.append(f"`python -m {module}`: no such runnable module")
            return proc
        package = module.split(".")[0]
        for cls in _settings_classes(package):
            proc.env |= settings_env(cls)
        proc.env |= library_env() | {"PROMETHEUS_MULTIPROC_DIR"}
        return proc

    if exe == "python" and len(argv) >= 2 and argv[1].startswith("/"):
        # A chart file mounted from a ConfigMap (the helm test's smoke script).
        script = Path(argv[1])
        proc = Process(f"python {script}")
        source = _mounted_file(script, container, pod_spec, config_maps)
        if source is None:
            proc.problems.append(f"{script} is not mounted from a chart ConfigMap")
            return proc
        chart_file = CHART / "files" / script.name
        if not chart_file.exists() or chart_file.read_text().strip() != source.strip():
            proc.problems.append(f"{script} is not helm/kubeloop/files/{script.name}")
        compile(source, str(script), "exec")
        proc.env |= _script_env(source)
        return proc

    if exe in CLI_GROUPS:
        proc = Process(" ".join(a for a in argv[:3] if not a.startswith("-")))
        try:
            command, _ = resolve_cli(argv)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            proc.problems.append(f"{' '.join(argv)}: {exc}")
            return proc
        proc.env |= _command_env(command)
        if exe == "kubeloop":
            package = command.callback.__module__.split(".")[0] if command.callback else ""
            # typer wraps callbacks; the original function keeps the module.
            original = getattr(command.callback, "__wrapped__", command.callback)
            module = getattr(original, "__module__", package)
            # The command modules of kubeloop/cli/ adapt one package each.
            package = CLI_PACKAGES.get(module, module.split(".")[0])
            for cls in _settings_classes(package):
                proc.env |= settings_env(cls)
            proc.env |= library_env()
        elif exe == "mlflow":
            proc.env |= library_env() | _s3_credentials_env()
        elif exe == "feast":
            # Feast expands ${VAR} in feature_store.yaml (feast/repo_config.py, os.path.expandvars).
            import feast.repo_config

            assert "expandvars" in Path(feast.repo_config.__file__).read_text()
            yaml_text = (
                _mounted_file(
                    Path("/etc/feast/feature_store.yaml"), container, pod_spec, config_maps
                )
                or ""
            )
            proc.env |= set(re.findall(r"\$\{(\w+)\}", yaml_text))
        return proc

    if exe == "jupyter":
        return _jupyter_lab(argv)

    return Process(exe, problems=[f"unknown executable {exe!r}"])


def _jupyter_lab(argv: list[str]) -> Process:
    """The workspace's JupyterLab: its options are real traits of the app, and what it reads is
    the server's own token variable plus what the notebooks' kernels and a terminal read (the
    platform's settings, MLflow's variables, every variable the bundled notebooks name, the
    options of the ``kubeloop`` CLI)."""
    import json

    from jupyterlab.labapp import LabApp

    proc = Process("jupyter lab")
    if argv[1:2] != ["lab"]:
        proc.problems.append(f"{' '.join(argv)}: only `jupyter lab` is in the image")
        return proc
    app = LabApp()
    classes = {c.__name__: c for c in app._classes_with_config_traits()}
    for arg in argv[2:]:
        name = arg.removeprefix("--").partition("=")[0]
        section, _, trait = name.rpartition(".")
        if not section:
            known = name in app.flags or name in app.aliases
        else:
            known = section in classes and trait in classes[section].class_traits(config=True)
        if not known:
            proc.problems.append(f"`{arg}`: not a JupyterLab option")
    import jupyter_server.auth.identity as identity

    assert "JUPYTER_TOKEN" in Path(identity.__file__).read_text()
    proc.env |= {"JUPYTER_TOKEN"} | settings_env(_settings_classes("kubeloop")[0]) | library_env()
    proc.env |= _every_command_env(_click_group("kubeloop"))  # the `kubeloop` CLI in a terminal
    for notebook in (CHART.parents[1] / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        proc.env |= _script_env(code)
    return proc


def _s3_credentials_env() -> set[str]:
    """Variables boto3 (MLflow's S3 artifact store) reads for credentials; empty without boto3."""
    try:
        from botocore.credentials import EnvProvider
    except ImportError:
        return set()
    return {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY}


def _mounted_file(
    path: Path,
    container: dict[str, Any],
    pod_spec: dict[str, Any],
    config_maps: dict[str, dict[str, str]],
) -> str | None:
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if path.parent == Path(mount["mountPath"]):
            volume = volumes.get(mount["name"], {})
            cm = volume.get("configMap", {}).get("name")
            if cm in config_maps:
                return config_maps[cm].get(path.name)
    return None
