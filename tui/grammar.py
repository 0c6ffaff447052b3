"""The grammar of the so-im command set: one docopt usage string and one summary per command.

Role: the text both front ends parse with (`tui.commands.parse`), show as help and complete
from (`tui.completion`). Data only: no sockets.
"""

from __future__ import annotations

USAGES: dict[str, str] = {
    "login": "Usage: login -u ACCOUNT -p PASSWORD\n\nOptions:\n  -u ACCOUNT   account name\n"
    "  -p PASSWORD  password",
    "register": "Usage: register -u ACCOUNT -p PASSWORD [-n NICKNAME]\n\nOptions:\n"
    "  -u ACCOUNT   account name (3-32 of a-z 0-9 _ . -)\n"
    "  -p PASSWORD  password (8-128 characters)\n  -n NICKNAME  shown to others",
    "send": "Usage: send (-u USER_ID | -g GROUP_ID) TEXT...\n\nOptions:\n"
    "  -u USER_ID   to a friend\n  -g GROUP_ID  to a group",
    "msg": "Usage: msg WHO TEXT...\n\nWHO is a friend (account name or user id) or a group "
    "(#NAME or g:GROUP_ID).",
    "users": "Usage: users [--all]\n\nOptions:\n"
    "  --all  everyone online, not only my friends and the members of my groups",
    "friends": "Usage: friends",
    "group": "Usage:\n  group\n  group create NAME... [--invite-only] [--all-history]\n"
    "  group search PREFIX\n  group join GROUP_ID\n  group leave GROUP_ID\n"
    "  group users [GROUP_ID]\n  group invite GROUP_ID USER_ID\n"
    "  group kick GROUP_ID USER\n  group owner GROUP_ID USER\n\nOptions:\n"
    "  --invite-only  only users I invite may join; search shows it to members only\n"
    "  --all-history  members read messages from before they joined too",
    "search": "Usage:\n  search -u PREFIX\n  search --more\n  search WORDS...\n\n"
    "WORDS: my messages holding every word (each starts a word of the message), "
    "newest first and numbered; jump N opens one.\n\nOptions:\n"
    "  -u PREFIX  users whose account starts with PREFIX\n"
    "  --more     the next page of the last message search",
    "jump": "Usage: jump N\n\nOpen the conversation of result N of the last search, at that "
    "message.",
    "mute": "Usage: mute [TARGET]\n\nNo bell and no title count for TARGET (a friend or a "
    "#group; default: the open conversation), except a message that mentions me.",
    "unmute": "Usage: unmute [TARGET]\n\nTARGET: a friend or a #group (default: the open "
    "conversation).",
    "add": "Usage:\n  add USER\n  add -u USER_ID\n\nUSER is an account name or a user id.\n\n"
    "Options:\n  -u USER_ID  the user to befriend (or accept)",
    "me": "Usage: me",
    "history": "Usage: history [-n N]\n\nOptions:\n  -n N  how many messages [default: 20]",
    "edit": "Usage: edit TEXT...\n\nedit [SEQ] TEXT: new text for my message SEQ (12 or #12) "
    "of the open conversation; without SEQ, my newest one.",
    "recall": "Usage: recall [SEQ]\n\nWithdraw my message SEQ of the open conversation "
    '(without SEQ, my newest one): everyone sees "message recalled".',
    "reply": "Usage: reply TEXT...\n\nreply [SEQ] TEXT: answer message SEQ of the open "
    "conversation, quoting it; without SEQ, the newest message of someone else.",
    "open": "Usage: open TARGET\n\nTARGET is a friend (account name or user id) or a group "
    "(#NAME or g:GROUP_ID).",
    "help": "Usage: help [COMMAND]",
    "exit": "Usage: exit",
    "logout": "Usage: logout",
    "unfriend": "Usage: unfriend USER\n\nUSER is an account name or a user id.",
    "decline": "Usage: decline USER\n\nUSER is an account name or a user id.",
    "block": "Usage: block USER\n\nUSER is an account name or a user id.",
    "unblock": "Usage: unblock USER\n\nUSER is an account name or a user id.",
    "passwd": "Usage: passwd OLD_PASSWORD NEW_PASSWORD",
    "delete-account": "Usage: delete-account -p PASSWORD [--yes]\n\nOptions:\n"
    "  -p PASSWORD  my password\n  --yes        really delete the account",
}
"""The grammar: the usage string of every command, by name."""

SUMMARY: dict[str, str] = {
    "login": "log in",
    "register": "create an account and log in",
    "send": "send to a friend or a group",
    "users": "friends and members of my groups online now",
    "friends": "my friends and friend requests",
    "group": "my groups; create, search, join, leave, members, invite, kick, hand over",
    "search": "search my messages for words (or users by account prefix)",
    "jump": "open a search result's conversation at that message",
    "mute": "no notifications from a conversation",
    "unmute": "notifications again",
    "add": "ask for (or accept) a friend",
    "edit": "change the text of my message",
    "recall": "withdraw my message",
    "reply": "answer a message, quoting it",
    "me": "who I am",
    "history": "recent messages of the open conversation",
    "open": "open a conversation with a friend or a #group",
    "help": "this list; help COMMAND: its usage",
    "msg": "send to a friend or a #group",
    "exit": "quit",
    "logout": "log out; the remembered login ends (its token stops working) and is forgotten",
    "unfriend": "end a friendship (or withdraw a request)",
    "decline": "decline a friend request",
    "block": "refuse someone's messages and requests, and look offline to them",
    "unblock": "lift a block",
    "passwd": "change my password (my other sessions end)",
    "delete-account": "delete my account for good",
}
