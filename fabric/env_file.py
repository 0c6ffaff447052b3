"""The `.env` file: one reader for `soim`, `soimctl` and every node.

Role: before a process reads its SOIM_* settings, load the file named by SOIM_ENV_FILE (else
./.env when there is one) into its environment with python-dotenv. A variable already set in the
real environment wins over the file; the file fills in the rest. No sockets.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from fabric.config import ConfigError

ENV_FILE_VAR = "SOIM_ENV_FILE"
"""Names the settings file; unset or empty means ./.env, skipped when absent."""

DEFAULT_ENV_FILE = Path(".env")


def load() -> Path | None:
    """Apply the settings file to os.environ without overriding what is set; the file read.

    Returns None when SOIM_ENV_FILE is unset and ./.env does not exist. Raises ConfigError
    (naming SOIM_ENV_FILE) when the named file cannot be read.
    """
    named = os.environ.get(ENV_FILE_VAR, "").strip()
    path = Path(named) if named else DEFAULT_ENV_FILE
    if not named and not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(ENV_FILE_VAR, f"cannot read {path}: {err}") from None
    if text.strip():
        from dotenv import load_dotenv  # only for a file that sets something (not /dev/null)

        load_dotenv(stream=io.StringIO(text), override=False)
    return path
