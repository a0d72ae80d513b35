"""Dataset versions with DVC.

Datasets live in a DVC project under the work folder (no git needed) and are pushed to a remote:
a local folder by default, an S3 bucket when ``KUBELOOP_DVC_REMOTE`` says so (at
``KUBELOOP_S3_ENDPOINT_URL`` for MinIO and other S3-compatible servers). A version is the
dataset's DVC md5; the ``.dvc`` pointer file is what a run records, and ``checkout`` brings that
exact data back from the remote to reproduce the run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeloop.settings import PlatformSettings

REMOTE_NAME = "kubeloop"


@dataclass(frozen=True)
class DataVersion:
    md5: str
    path: Path
    pointer: Path  # the .dvc file
    remote: str

    @property
    def short(self) -> str:
        return self.md5[:12]


def remote_config(settings: PlatformSettings, remote: str) -> dict[str, str]:
    """The DVC remote's section: its URL and, for s3:// on MinIO or moto, the endpoint."""
    if remote.startswith("s3://") and settings.s3_endpoint_url:
        return {"url": remote, "endpointurl": settings.s3_endpoint_url}
    return {"url": remote}


def _repo(settings: PlatformSettings):
    from dvc.repo import Repo  # heavy import, only where DVC is used

    root = settings.work_dir / "dvc"
    remote = settings.dvc_remote or str(settings.work_dir / "dvc-remote")
    if not (root / ".dvc").exists():
        root.mkdir(parents=True, exist_ok=True)
        Repo.init(str(root), no_scm=True)
    repo = Repo(str(root))
    with repo.config.edit() as conf:
        conf["remote"][REMOTE_NAME] = remote_config(settings, remote)
        conf["core"]["remote"] = REMOTE_NAME
        conf["core"]["analytics"] = False
    return Repo(str(root)), remote


def dataset_path(settings: PlatformSettings, name: str) -> Path:
    """Where the versioned dataset of a project lives inside the DVC project."""
    return settings.work_dir / "dvc" / "datasets" / name / "dataset.parquet"


# The pointer's ``meta`` key for the rows of a dataset that came from the data source (not
# production's labelled rows versioned with them): what the new-data trigger compares with.
SOURCE_ROWS = "source_rows"


def pointer_meta(pointer_text: str) -> dict[str, Any]:
    """The ``meta`` field of a ``.dvc`` pointer ({} when it has none)."""
    return yaml.safe_load(pointer_text).get("meta") or {}


def version_file(
    settings: PlatformSettings, path: Path, meta: dict[str, Any] | None = None
) -> DataVersion:
    """``dvc add`` and ``dvc push`` a file that sits inside the DVC project.

    ``meta`` goes in the pointer's ``meta`` field (which DVC keeps and ignores), so facts about
    the data, such as its row count, travel with the pointer and are read without pulling it.
    """
    repo, remote = _repo(settings)
    repo.add(str(path))
    repo.push()
    pointer = path.with_name(path.name + ".dvc")
    content = yaml.safe_load(pointer.read_text())
    if meta:
        content["meta"] = meta
        pointer.write_text(yaml.safe_dump(content, sort_keys=False))
    md5 = content["outs"][0]["md5"]
    return DataVersion(md5=md5, path=path, pointer=pointer, remote=remote)


def checkout(settings: PlatformSettings, pointer_text: str, dest: Path) -> Path:
    """Bring back the exact dataset a ``.dvc`` pointer names (pulled from the remote)."""
    repo, _ = _repo(settings)
    out = yaml.safe_load(pointer_text)["outs"][0]
    restore = settings.work_dir / "dvc" / "restore" / out["md5"]
    restore.mkdir(parents=True, exist_ok=True)
    pointer = restore / f"{out['path']}.dvc"
    pointer.write_text(pointer_text)
    repo.pull(targets=[str(pointer)])
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(restore / out["path"], dest)
    return dest
