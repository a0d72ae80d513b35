"""Train a small model of the bundled example into a SQLite MLflow store and alias it champion.

``python tests/k8s/train_champion.py FOLDER``: the store is FOLDER/mlflow.db with artifacts under
FOLDER/mlartifacts, for the server container test (which mounts FOLDER at the same path). A
process of its own because MLflow's store and artifact root come from the environment. The model
is made by the shared factories (tests/utils/models.py: the train step's own function, the
registry's rules), so the server loads it exactly as it loads a pipeline's model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(folder: Path) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    os.environ["KUBELOOP_WORK_DIR"] = str(folder / "work")
    os.environ["KUBELOOP_MLFLOW_ARTIFACT_ROOT"] = (folder / "mlartifacts").as_uri()

    from kubeloop.settings import PlatformSettings
    from tests.utils.factories import example_spec, sample_frame
    from tests.utils.models import register_model, train_model

    settings = PlatformSettings()
    spec = example_spec()
    raw = sample_frame(rows=2_000, seed=11, buildings=40)
    trained = train_model(raw, spec, settings, data_version="container-test")
    champion = register_model(settings, spec, trained, champion=True, data_version="container-test")
    print(f"{spec.model_name} version {champion.version} is champion")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
