"""Entry point: `python -m nodes.storage` runs one storage node from the SOIM_* environment."""

import sys

from fabric.node import main
from nodes.storage.node import StorageNode

sys.exit(main(StorageNode))
