"""``python -m actors`` does what ``actorcast`` does."""

import sys

from .cli import main

sys.exit(main())
