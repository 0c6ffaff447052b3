"""Entry point: `python -m nodes.gateway` runs one gateway node from the SOIM_* environment."""

import sys

from fabric.node import main
from nodes.gateway.node import GatewayNode

sys.exit(main(GatewayNode))
