"""``python -m kubeloop``: the ``kubeloop`` command (the pipeline image's entry point)."""

from kubeloop.cli.main import app

if __name__ == "__main__":
    app(prog_name="kubeloop")
