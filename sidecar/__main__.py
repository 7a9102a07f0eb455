"""`python -m sidecar` is the `sidecar` command."""

import sys

from sidecar.cli.main import main

sys.exit(main())
