"""``python -m cardano_forge_cli``."""

import sys

from cardano_forge_cli.main import main

sys.exit(main())
