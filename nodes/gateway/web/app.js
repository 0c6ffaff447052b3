// The so-im web client's entry point: it wires the Session (connection, login, ordered
// messages, outbox), the State, the Views and the two controllers (chat.js: the open
// conversation; people.js: friends, groups, search), answers the session's events, and owns
// the login form, the page-wide keys and the one scheduled redraw. Peer sockets: those of the
// Session (this page's gateway, or another after a failover).

import { Chat } from "./chat.js";
import { People } from "./people.js";
import { Session } from "./session.js";
import { State, TYPING_SHOW_MS } from "./state.js";
import { Views } from "./views.js";

const $ = (id) => document.getElementById(id);
const TOAST_MS = 6000;
const WORDS = {
  BAD_CREDENTIALS: "wrong account or password",
  LOCKED_OUT: "too many failed logins; try again later",
  ALREADY_EXISTS: "that name is taken",
  INVALID_ACCOUNT: "an account is 3-32 characters of a-z 0-9 _ . -",
  INVALID_PASSWORD: "a password is 8-128 characters",
  INVALID_NAME: "that name is not allowed",
  ALREADY_FRIENDS: "you are friends already",
  ALREADY_MEMBER: "you are a member already",
  NOT_FRIEND: "not your friend (yet)",
  NOT_AUTHOR: "only your own messages",
  EDIT_WINDOW_CLOSED: "too old to edit or recall",
  GROUP_FULL: "the group is full",
  BLOCKED: "they have blocked you",
  RATE_LIMITED: "slow down a little",
  CONNECTION_LOST: "not connected; reconnecting…",
};
const REFRESHING = new Set([
  "NOTICE_FRIEND_REQUEST",
  "NOTICE_FRIEND_ACCEPTED",
  "NOTICE_FRIEND_REMOVED",
  "NOTICE_GROUP_REMOVED",
  "NOTICE_GROUP_OWNER",
  "NOTICE_GROUP_INVITE",
]);

class App {
  constructor() {
    this.state = new State();
    this.views = new Views();
    this.drawing = false;
    this.refreshing = null;
    this.refreshAgain = false;
    this.toastTimer = null;
    this.session = new Session({
      onMessage: (msg) => this.message(msg),
      onPush: (push) => this.push(push),
      onLink: (up, url) => this.link(up, url),
      onLogin: (reply, resumed) => this.loggedIn(reply, resumed),
      onLogout: (reason) => this.loggedOut(reason),
      onAck: (item, ack) => this.acked(item, ack),
      onFail: (item, err) => {
        this.state.failed(item.convId, item.request.clientMsgId, this.words(err));
        this.render();
      },
    });
    this.chat = new Chat(this);
    this.people = new People(this);
    this.wire();
  }

  words(err) {
    return WORDS[err.code] || err.message || String(err);
  }

  /** A refusal with the server's error code: "FORBIDDEN: only the group's owner invites". */
  explain(err) {
    if (!err.code) return String(err.message || err);
    const why = err.detail || WORDS[err.code] || "";
    return why ? `${err.code}: ${why}` : err.code;
  }

  /** Ask before what cannot be undone: a modal dialog (Escape or Cancel: no); true if `yes`
   * was chosen. */
  ask(question, yes) {
    const dialog = $("confirm");
    $("confirm-text").textContent = question;
    $("confirm-yes").textContent = yes;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
      dialog.showModal();
    });
  }

  wire() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.enter(false);
    });
    $("register-submit").addEventListener("click", () => this.enter(true));
    $("logout").addEventListener("click", () => this.session.logout());
    $("back").addEventListener("click", () => this.back());
    $("conversations").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-conv]");
      if (b) this.chat.open(b.dataset.conv);
    });
    document.addEventListener("keydown", (ev) => this.key(ev));
  }

  start() {
    this.views.status(this.state);
    this.session.start();
  }

  // ---- the login form
  async enter(register) {
    const account = $("login-account").value.trim().toLowerCase();
    const password = $("login-password").value;
    const nickname = $("login-nickname").value.trim();
    $("login-error").textContent = "";
    try {
      if (register) await this.session.register(account, password, nickname);
      else await this.session.login(account, password);
      $("login-password").value = "";
    } catch (err) {
      $("login-error").textContent = this.words(err);
    }
  }

  loggedIn(reply, resumed) {
    const again = this.state.me && this.state.me.userId === reply.userId;
    if (!again) this.state.clear();
    this.state.me = reply;
    this.state.link = { up: this.session.conn.up, url: this.session.conn.url };
    this.views.screen(true);
    this.render();
    if (!again) $("search-input").focus();
    if (resumed && again) this.toast("back online");
    this.refresh();
  }

  loggedOut(reason) {
    if ($("confirm").open) $("confirm").close(); // a question of the session that ended
    const link = this.state.link;
    this.state.clear();
    this.state.link = link;
    this.views.screen(false);
    $("login-error").textContent = reason ? this.words({ code: reason }) : "";
    this.render();
    $("login-account").focus();
  }

  link(up, url) {
    this.state.link = { up, url };
    this.views.status(this.state);
    document.body.dataset.link = up ? "up" : "down";
  }

  // ---- the session's events
  message(msg) {
    if (this.state.addMessage(msg)) this.refresh();
    this.chat.seen(msg.convId);
    if (msg.convId === this.state.open && this.state.entries.get(msg.convId)?.group) this.chat.counts();
    this.render();
  }

  acked(item, ack) {
    const { state } = this;
    if (!state.me) return;
    const r = item.request;
    state.addMessage({
      convId: ack.convId,
      seq: ack.seq,
      msgId: ack.msgId,
      sender: state.me.userId,
      senderAccount: state.me.account,
      body: r.body,
      tsMs: ack.tsMs,
      clientMsgId: ack.clientMsgId,
      kind: r.kind,
      refSeq: r.refSeq,
      ...(r.toGroup ? { toGroup: r.toGroup } : { toUser: r.toUser }),
    });
    this.chat.counts();
    this.render();
  }

  push(push) {
    const { state } = this;
    if (push.receipt) state.receipt(push.receipt);
    else if (push.presence) state.setPresence(push.presence.userId, Boolean(push.presence.online));
    else if (push.typing) {
      state.setTyping(push.typing.convId, push.typing.account, Date.now());
      setTimeout(() => this.render(), TYPING_SHOW_MS + 50);
    } else if (push.syncHint) this.refresh();
    else if (push.notice) this.notice(push.notice);
    this.render();
  }

  notice(n) {
    const { state } = this;
    const who = n.user ? n.user.account : "";
    const convId = n.convId || "";
    const group = (convId && state.entries.get(convId)?.title) || `group ${convId}`;
    const text = {
      NOTICE_FRIEND_REQUEST: `${who} asks to be your friend`,
      NOTICE_FRIEND_ACCEPTED: `${who} accepted: you are friends now`,
      NOTICE_GOING_AWAY: "the gateway is stopping; moving…",
      NOTICE_REDIRECT: "the gateway is draining; moving…",
      NOTICE_GROUP_INVITE: `${who} invited you to group ${convId}: Join is at the top of the list`,
      NOTICE_GROUP_REMOVED: `${who} removed you from ${group}`,
      NOTICE_GROUP_OWNER: `${who} handed you ${group}: you own it now`,
      NOTICE_FRIEND_REMOVED: convId
        ? `${who} ended your friendship`
        : `${who} withdrew or declined a friend request`,
    }[n.kind];
    if (n.kind === "NOTICE_GROUP_INVITE" && convId) state.invited(convId, n.user);
    if (n.kind === "NOTICE_FRIEND_REMOVED" && convId && n.user) {
      state.friendshipEnded(convId, n.user, `${who} ended your friendship`);
    }
    if (n.kind === "NOTICE_GROUP_OWNER" && state.entries.has(convId) && state.me) {
      state.entries.get(convId).owner = state.me.userId;
      this.people.members();
    }
    if (n.kind === "NOTICE_SESSION_ENDED") {
      this.session.logout();
      this.loggedOut("");
      $("login-error").textContent = n.text || "your session was ended";
      return;
    }
    if (text || n.text) this.toast(text || n.text);
    if (REFRESHING.has(n.kind)) this.refresh();
  }

  /** Friends, groups and the state of every conversation again (one fetch at a time). */
  async refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          const [friends, groups] = await Promise.all([
            this.session.call("Friends"),
            this.session.call("Groups"),
          ]);
          this.state.setFriends(friends.friends || [], friends.blocked || []);
          this.state.setGroups(groups.groups || []);
          this.state.applySync(await this.session.sync());
        } catch (err) {
          if (err.code !== "CONNECTION_LOST") this.toast(this.words(err), true);
          break; // the next login refreshes
        }
        if (this.state.open && !this.state.entries.has(this.state.open)) {
          this.state.open = ""; // left, removed or unfriended
          if ($("pane").contains(document.activeElement)) $("search-input").focus();
        }
        this.chat.seen(this.state.open);
        this.render();
      } while (this.refreshAgain && this.state.me);
      this.refreshing = null;
    })();
    return this.refreshing;
  }

  // ---- drawing
  render() {
    if (this.drawing) return;
    this.drawing = true;
    setTimeout(() => {
      this.drawing = false;
      this.draw();
    }, 0);
  }

  draw() {
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    this.views.status(this.state);
    if (!this.state.me) return;
    this.views.sidebar(this.state);
    this.views.searchResults(this.state);
    this.views.pane(this.state);
    document.title = this.title();
    if (atBottom && this.chat.keepFromBottom === null) list.scrollTop = list.scrollHeight;
    this.chat.drawn();
  }

  title() {
    let unread = 0;
    for (const e of this.state.entries.values()) unread += this.state.unread(e);
    return unread ? `(${unread}) so-im` : "so-im";
  }

  toast(text, error = false) {
    const t = $("toast");
    t.textContent = text;
    t.dataset.error = error ? "1" : "";
    t.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      t.hidden = true;
    }, TOAST_MS);
  }

  // ---- keys
  back() {
    const open = this.state.open;
    this.chat.close();
    const b = open && document.querySelector(`#conversations button[data-conv="${open}"]`);
    (b || $("search-input")).focus();
  }

  /** Page-wide keys: Escape leaves search, the member panel (when the focus is in it) or the
   * conversation; Ctrl+K searches; Alt+Up and Alt+Down move between conversations. */
  key(ev) {
    if (!this.state.me || $("confirm").open) return; // the dialog answers its own keys
    if (ev.key === "Escape") {
      if (this.state.search) this.people.closeSearch();
      else if (this.state.membersOpen && $("members").contains(document.activeElement)) {
        this.people.toggleMembers();
        $("members-toggle").focus();
      } else if (this.state.open) this.back();
    } else if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "k") {
      ev.preventDefault();
      $("search-input").focus();
    } else if (ev.altKey && (ev.key === "ArrowUp" || ev.key === "ArrowDown")) {
      ev.preventDefault();
      const list = this.state.sidebar();
      if (!list.length) return;
      const at = list.findIndex((e) => e.convId === this.state.open);
      const step = ev.key === "ArrowUp" ? -1 : 1;
      const next = at < 0 ? 0 : (at + step + list.length) % list.length;
      this.chat.open(list[next].convId);
    }
  }
}

new App().start();
