import sys

from medgan.cli import main

sys.exit(main())
