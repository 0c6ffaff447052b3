"""The so-im fabric: ZeroMQ sockets, protobuf envelopes, discovery, keys and the node base."""

__version__ = "0.1.0"
