"""``python -m aip`` is the ``aip`` command."""
import sys

from aip.cli import main

sys.exit(main())
