"""Platform settings shared by every kubeloop process.

Read from ``KUBELOOP_*`` environment variables (and an optional ``.env``). The same code runs on
the embedded default (everything under one git-ignored work folder) and on services
(MLflow on PostgreSQL or a tracking server, Feast online store on Redis, registry on PostgreSQL);
only these settings differ. Nothing here touches the disk or a library at import time: entry
points build a ``PlatformSettings`` and pass it down.

MLflow reads its own variable, ``MLFLOW_TRACKING_URI``; when it is unset the embedded default is a
SQLite store in the work folder. Object-store URLs (``s3://``) reach an S3-compatible server
(MinIO, moto) through one setting, ``s3_endpoint_url``, which every reader of S3 is given:
pandas/pyarrow through fsspec's ``storage_options``, the DVC remote's ``endpointurl`` and MLflow's
``MLFLOW_S3_ENDPOINT_URL``. Credentials stay boto's own ``AWS_*`` variables (or IRSA).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubeloop import images

if TYPE_CHECKING:
    from kubeloop.spec import ProjectSpec


class PlatformSettings(BaseSettings):
    """Where state lives and which backends hold it."""

    model_config = SettingsConfigDict(
        env_prefix="KUBELOOP_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Literal["dev", "staging", "prod"] = Field(
        "dev", description="Deployment environment; outside dev, secrets are mandatory."
    )
    work_dir: Path = Field(
        Path(".kubeloop"),
        description="Folder for all local state (MLflow store, Feast stores, DVC, reports).",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "KUBELOOP_MLFLOW_TRACKING_URI"),
        description="MLflow's own variable, read once here (MLflow rewrites it in-process); "
        "default: a SQLite store in the work folder.",
    )
    mlflow_artifact_root: str | None = Field(
        None,
        description="Artifact root for new experiments (s3://... on a cluster); "
        "default: <work_dir>/mlartifacts when MLflow uses a local store.",
    )
    feast_online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store: SQLite file in the work folder, or Redis."
    )
    redis_url: str = Field(
        "127.0.0.1:6379", description="Redis address for the Feast online store (host:port[,opts])."
    )
    feast_registry: str | None = Field(
        None,
        description="Feast registry: a SQLAlchemy URL (postgresql+psycopg://...) for a shared "
        "SQL registry; default: a file in the work folder.",
    )
    feast_offline_store: str | None = Field(
        None,
        description="Feast offline store: a PostgreSQL URL (postgresql+psycopg://...) every "
        "pipeline step and the materialize job reach; default: Parquet files in the work "
        "folder read by DuckDB (one machine only).",
    )
    prediction_log_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the prediction log the server writes "
        "(postgresql+psycopg://...): monitoring reads it, and a training run with "
        "retraining.labelled_hours reads its labelled rows; default: SQLite at "
        "<work_dir>/predictions.db.",
    )
    served_model: Literal["project", "production"] = Field(
        "project",
        description="Which registered model this environment serves, and so whose predictions "
        "its monitoring reads: 'project', the spec's model, where training registers versions "
        "(dev, staging); 'production', the spec's rollout.production_model, which only "
        "approved releases fill (copy_model_version).",
    )
    dvc_remote: str | None = Field(
        None,
        description="DVC remote URL for datasets (s3://bucket/prefix); default: a local remote "
        "in the work folder.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("KUBELOOP_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO, http://minio:9000) for every s3:// URL: "
        "data sources, the DVC remote, MLflow artifacts; default: AWS S3. MLflow's own "
        "MLFLOW_S3_ENDPOINT_URL is read too.",
    )
    local_runner: Literal["subprocess", "docker"] = Field(
        "subprocess",
        description="How `kubeloop run training` and local retraining run the steps: child "
        "processes of this environment, or one container per step of the pipeline image "
        "(kfp.local's DockerRunner, as pods on a cluster).",
    )
    docker_run_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra docker-py `containers.run` options for the docker runner, as JSON "
        '(e.g. {"runtime": "runc"} for podman); merged over host networking.',
    )

    pipeline_image_registry: str = Field(
        images.REGISTRY, description="Registry (and path) of the pipeline steps' image."
    )
    pipeline_image_repository: str = Field(
        images.PIPELINE_REPOSITORY, description="Repository of the pipeline steps' image."
    )
    pipeline_image_tag: str = Field(images.VERSION, description="Tag of the pipeline steps' image.")

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Pipeline steps run in subprocesses and containers: a relative path would drift.
        return value.expanduser().resolve()

    @property
    def pipeline_image(self) -> str:
        """The image every compiled or submitted pipeline step runs."""
        return images.image_name(
            self.pipeline_image_registry, self.pipeline_image_repository, self.pipeline_image_tag
        )

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite store in the work folder."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.work_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Artifact location for new experiments; None lets a tracking server decide."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.work_dir / "mlartifacts").as_uri()

    @property
    def log_url(self) -> str:
        """The prediction log's SQLAlchemy URL (the same default as the server's)."""
        return self.prediction_log_url or f"sqlite:///{self.work_dir / 'predictions.db'}"

    def model_name(self, spec: ProjectSpec) -> str:
        """The registered model this environment serves (``served_model``): the server loads
        its aliases and logs its predictions under it, monitoring reads those predictions."""
        if self.served_model == "project":
            return spec.model_name
        if not spec.rollout.production_model:
            from kubeloop.errors import SpecError

            raise SpecError(
                "KUBELOOP_SERVED_MODEL=production needs rollout.production_model in the spec: "
                "the registered model approved releases are copied into",
                field="rollout.production_model",
            )
        return spec.rollout.production_model

    def storage_options(self, url: str) -> dict[str, Any] | None:
        """fsspec options (pandas, pyarrow via fsspec) for reading ``url``: the S3 endpoint."""
        if url.startswith(("s3://", "s3a://")) and self.s3_endpoint_url:
            return {"endpoint_url": self.s3_endpoint_url}
        return None

    def export(self) -> dict[str, str]:
        """Environment that hands these settings to a child process (a kfp.local step).

        Secrets are left out: a child inherits them from this process's own environment, and
        their masked form must never overwrite the real value there.
        """
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri}
        if self.s3_endpoint_url:  # MLflow's S3 artifact client reads only its own variable
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        for name, value in self.model_dump(mode="json").items():
            secret = isinstance(getattr(self, name), SecretStr)
            if name == "mlflow_tracking_uri" or value is None or secret:
                continue
            # JSON for everything but plain strings: what pydantic-settings parses back.
            env[f"KUBELOOP_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def export_to_environment(self) -> None:
        """Put ``export()`` into this process's environment, for the processes it starts.

        kfp.local's subprocess steps and uvicorn's worker processes inherit the environment and
        offer no other channel; command-line overrides reach them this way. Secrets follow the
        rule of ``export()``: children inherit them unchanged.
        """
        os.environ.update(self.export())
