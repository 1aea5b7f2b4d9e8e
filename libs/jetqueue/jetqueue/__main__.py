"""``python -m jetqueue``: the jetqueue command."""

import sys

from jetqueue.cli import main

sys.exit(main())
