import sys

from stylejax.cli import main

sys.exit(main())
