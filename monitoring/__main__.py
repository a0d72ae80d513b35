"""``python -m monitoring``: one monitoring run (the CronJob's entry point), settings from
``KUBELOOP_*``; the same options as ``kubeloop monitor``."""

from monitoring.cli import main

if __name__ == "__main__":
    main()
