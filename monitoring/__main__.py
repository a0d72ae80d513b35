"""``python -m monitoring``: one monitoring run (the CronJob's entry point), settings from
``KUBELOOP_*``; the same options as ``kubeloop monitor``."""

from kubeloop.cli.monitor import main

if __name__ == "__main__":
    main()
