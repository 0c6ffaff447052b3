"""The roles of a cluster: the names a node states in its discovery record, its heartbeats and
its `fabric.Status` reply, and by which every other node asks the membership view for the live
nodes of one role.

Role: the closed set of role names; discovery drops a record naming another (`bad_role`), and
the membership view counts live peers per role. No sockets.
"""

ROLES = ("gateway", "router", "directory", "storage")
