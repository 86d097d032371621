"""``python -m aip`` is the ``aip`` command."""
import sys

from aip.app.cli import main

sys.exit(main())
