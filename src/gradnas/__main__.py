import sys

from gradnas.cli import main

sys.exit(main())
