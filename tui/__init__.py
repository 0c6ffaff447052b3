"""The so-im client: a protocol session (no rendering) and the full-screen terminal app."""
