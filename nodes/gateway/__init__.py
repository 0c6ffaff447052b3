"""The gateway node of so-im (see __main__ for how it runs)."""
