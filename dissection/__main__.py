import sys

from dissection.cli import main

sys.exit(main())
