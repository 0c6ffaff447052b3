"""The colours of the full-screen client: which screen element is drawn in which colour.

Role: hold the `[colours]` table of the config file (element → colour name, both checked by
`tui.config_file`) over the built-in defaults, and paint a piece of text as one element with
blessed's colour of that name. The elements: `own` and `other` (the sender's name of my
messages and of others'), `time` (a message's time), `mention` (a message that mentions me),
`notice` (a notice from the cluster in the console), `status` and `error` (the status line,
normal and after a refusal), `unread` (a conversation's unread count). No sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from blessed import Terminal

DEFAULTS: Mapping[str, str] = {"error": "red", "mention": "yellow"}
"""Elements drawn in a colour unless the config file says otherwise; the rest: "default"."""


@dataclass(frozen=True)
class Palette:
    """The configured colours; `paint` draws text as an element."""

    colours: Mapping[str, str] = field(default_factory=dict)

    def colour(self, element: str) -> str:
        return self.colours.get(element, DEFAULTS.get(element, "default"))

    def paint(self, term: Terminal, element: str, text: str) -> str:
        """`text` in the element's colour ("default": the terminal's own, text unchanged)."""
        name = self.colour(element)
        return text if name == "default" or not text else str(getattr(term, name)(text))


DEFAULT_PALETTE = Palette()
"""The built-in colours, for a client without a `[colours]` table."""
