"""`python -m vlmr ...` is `vlmr ...`."""

import sys

from vlmr.cli import main

sys.exit(main())
