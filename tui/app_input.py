"""The input line of the full-screen client: editing, history, and what each key means.

Role: `LineEditor` holds the line being typed and its cursor (insert, delete, move, home, end)
and the lines entered before (up/down recall them); `key_action` turns a blessed keystroke into
an `Action` for the app — edit the line, submit it, scroll, switch conversation, quit. No
sockets; it never reads the terminal itself.
"""

from __future__ import annotations

import enum

from blessed.keyboard import Keystroke

HISTORY = 200


class Action(enum.Enum):
    """What a key asks the app to do (beyond editing the line)."""

    NONE = "none"  # nothing, or an edit already applied to the line
    SUBMIT = "submit"  # Enter: run the line
    PAGE_UP = "page_up"  # scroll back (loads older history at the top)
    PAGE_DOWN = "page_down"
    NEXT = "next"  # Tab: the next conversation
    PREVIOUS = "previous"  # Shift-Tab
    QUIT = "quit"  # Ctrl-D on an empty line


class LineEditor:
    """One line of text with a cursor, and the history of submitted lines."""

    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0
        self.history: list[str] = []
        self._recall = 0  # index into history; len(history) means the line being typed
        self._draft = ""

    def insert(self, chars: str) -> None:
        self.text = self.text[: self.cursor] + chars + self.text[self.cursor :]
        self.cursor += len(chars)

    def backspace(self) -> None:
        if self.cursor:
            self.text = self.text[: self.cursor - 1] + self.text[self.cursor :]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[: self.cursor] + self.text[self.cursor + 1 :]

    def left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def right(self) -> None:
        self.cursor = min(len(self.text), self.cursor + 1)

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.text)

    def kill(self) -> None:
        """Ctrl-U: clear the line."""
        self.text, self.cursor = "", 0

    def up(self) -> None:
        """The previous history line (the one being typed is kept as a draft)."""
        if self._recall == len(self.history):
            self._draft = self.text
        if self._recall > 0:
            self._recall -= 1
            self._show(self.history[self._recall])

    def down(self) -> None:
        if self._recall < len(self.history):
            self._recall += 1
            self._show(
                self.history[self._recall] if self._recall < len(self.history) else self._draft
            )

    def submit(self, remember: bool = True) -> str:
        """Take the line; keep it in the history unless `remember` is False (a password)."""
        line = self.text
        if remember and line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY]
        self._recall, self._draft = len(self.history), ""
        self.kill()
        return line

    def _show(self, text: str) -> None:
        self.text, self.cursor = text, len(text)


_EDITS = {
    "KEY_LEFT": LineEditor.left,
    "KEY_RIGHT": LineEditor.right,
    "KEY_HOME": LineEditor.home,
    "KEY_END": LineEditor.end,
    "KEY_BACKSPACE": LineEditor.backspace,
    "KEY_DELETE": LineEditor.delete,
    "KEY_UP": LineEditor.up,
    "KEY_DOWN": LineEditor.down,
}
_CONTROL = {
    "\x01": LineEditor.home,
    "\x05": LineEditor.end,
    "\x15": LineEditor.kill,
    "\x02": LineEditor.left,
    "\x06": LineEditor.right,
    "\x08": LineEditor.backspace,
    "\x7f": LineEditor.backspace,
}
_ACTIONS = {
    "KEY_ENTER": Action.SUBMIT,
    "KEY_PGUP": Action.PAGE_UP,
    "KEY_PGDOWN": Action.PAGE_DOWN,
    "KEY_TAB": Action.NEXT,
    "KEY_BTAB": Action.PREVIOUS,
}


def key_action(key: Keystroke, editor: LineEditor) -> Action:
    """Apply an editing key to `editor`, or say which app action the key asks for."""
    if key.is_sequence:
        name = key.name or ""
        edit = _EDITS.get(name)
        if edit is not None:
            edit(editor)
            return Action.NONE
        return _ACTIONS.get(name, Action.NONE)
    text = str(key)
    if text in ("\r", "\n"):
        return Action.SUBMIT
    if text == "\t":
        return Action.NEXT
    if text == "\x04":
        return Action.QUIT if not editor.text else Action.NONE
    edit = _CONTROL.get(text)
    if edit is not None:
        edit(editor)
    elif text.isprintable():
        editor.insert(text)
    return Action.NONE
