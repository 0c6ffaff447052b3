"""Entry point: `python -m nodes.router` runs one router node from the SOIM_* environment."""

import sys

from fabric.node import main
from nodes.router.node import RouterNode

sys.exit(main(RouterNode))
