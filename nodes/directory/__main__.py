"""Entry point: `python -m nodes.directory` runs one directory node from the SOIM_* environment."""

import sys

from fabric.node import main
from nodes.directory.node import DirectoryNode

sys.exit(main(DirectoryNode))
