import sys

from dgm.core.cli import main

sys.exit(main())
