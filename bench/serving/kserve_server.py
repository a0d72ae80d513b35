"""KServe's Python model server with a scikit-learn model, as KServe's sklearn runtime serves it.

Runs in its own virtual environment (``bench/results/venv-kserve``, ``kserve`` from PyPI):
``python kserve_server.py --model_name diabetes --model_dir DIR --http_port PORT``.
"""

import argparse
import pathlib

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        self._model = joblib.load(pathlib.Path(self.model_dir) / "model.joblib")
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = get_predict_input(payload)
        return get_predict_response(payload, self._model.predict(instances), self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
