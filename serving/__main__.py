"""``python -m serving``: the container's entry point; settings come from ``KUBELOOP_*``."""

from __future__ import annotations

import sys

from pydantic import ValidationError


def main() -> int:
    from serving.server import run
    from serving.settings import ServingSettings

    try:
        settings = ServingSettings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"kubeloop server: {error['msg']}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
