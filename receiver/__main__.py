"""``python -m receiver`` is the ``bighub-siem`` command."""

import sys

from receiver.cli import main

sys.exit(main())
