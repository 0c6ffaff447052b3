"""so-im node roles: gateway, router, directory, storage; each runs as `python -m nodes.<role>`."""
