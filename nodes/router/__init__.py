"""The router node of so-im (see __main__ for how it runs)."""
