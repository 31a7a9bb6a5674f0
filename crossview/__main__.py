"""``python -m crossview`` runs the command line."""

import sys

from crossview.cli import main

sys.exit(main())
