"""`python -m dissection`: the CLI as a process."""

import gc
import sys

from dissection.cli import main

code = main(own_process=True)
# What the command made is left to the OS: the interpreter's final collections would walk it (and torch's
# objects) for about a second before the process could exit.
gc.freeze()
sys.exit(code)
