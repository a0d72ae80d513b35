"""Train a small model of the bundled example into a SQLite MLflow store and alias it champion.

``python tests/k8s/train_champion.py FOLDER``: the store is FOLDER/mlflow.db with artifacts under
FOLDER/mlartifacts, for the server container test (which mounts FOLDER at the same path). The
model is fitted and logged by the train step's own function (components/train/core.py), on the
features the feature repository's transform computes, and registered and promoted with the
registry's rules, so the server loads it exactly as it loads a pipeline's model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(folder: Path) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    os.environ["KUBELOOP_WORK_DIR"] = str(folder / "work")
    os.environ["KUBELOOP_MLFLOW_ARTIFACT_ROOT"] = (folder / "mlartifacts").as_uri()

    import importlib

    from components.features.core import load_transform
    from components.train.core import fit_and_log
    from kubeloop import model_store, registry
    from kubeloop.settings import PlatformSettings
    from tests.utils.factories import example_spec, sample_frame

    settings = PlatformSettings()
    spec = example_spec()
    raw = sample_frame(rows=2_000, seed=11, buildings=40)
    frame = load_transform(spec)(raw)
    frame[spec.target] = raw[spec.target].to_numpy()
    features = list(importlib.import_module(spec.features.definitions).FEATURES)
    run_id, model_uri, _ = fit_and_log(frame, features, spec, settings, {"md5": "container-test"})
    client = model_store.configure(settings)
    version = registry.register(
        client,
        spec.model_name,
        model_uri,
        run_id,
        spec.model.tag,
        spec.model.manual_revision,
        "container-test",
    )
    registry.promote(client, spec.model_name, str(version.version), approve=True, approver="tests")
    print(f"{spec.model_name} version {version.version} is champion")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
