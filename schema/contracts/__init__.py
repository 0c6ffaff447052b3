"""Service contracts: what the callers and the servers of each service agree on, beside the
messages of the .proto files — each service's method catalogue, the topics and methods of the
events it publishes, and the limits both ends check. One module per service; a role imports
the contracts of the services it serves or calls, never another role's modules. No sockets.
"""
