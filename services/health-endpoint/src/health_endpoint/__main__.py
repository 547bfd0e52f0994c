"""``python -m health_endpoint``: run the service under gunicorn with the packaged settings.

Extra arguments go to gunicorn (``python -m health_endpoint --workers 4``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG_FILE = Path(__file__).with_name("gunicorn.conf.py")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = [sys.executable, "-m", "gunicorn", "--config", str(CONFIG_FILE), *args]
    os.execv(sys.executable, command)  # noqa: S606  # replaces this process: no shell involved


if __name__ == "__main__":
    main()
