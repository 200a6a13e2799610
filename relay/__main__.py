"""``python -m relay``: the same command as the ``relay`` script."""

import sys

from relay.cli.main import main

sys.exit(main())
