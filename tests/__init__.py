"""so-im test suite."""
