"""How a soimctl command says it failed: one JSON object with --json, else one line.

Role: the one shape of soimctl's errors — `{"error": CODE, "detail": ..., ...}` on stdout with
`--json` (scripts read stdout), `soimctl: DETAIL` on stderr without — and the exit status the
caller gives. No sockets.
"""

from __future__ import annotations

import json
import sys


def failed(code: str, detail: str, as_json: bool, status: int = 2, **extra: str) -> int:
    """Report a failure with error `code` and `detail` (plus `extra` JSON fields); `status`."""
    if as_json:
        print(json.dumps({"error": code, **extra, "detail": detail}))
    else:
        print(f"soimctl: {detail}", file=sys.stderr)
    return status
