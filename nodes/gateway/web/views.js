// Drawing the State into the page: the status line, the conversation list (unread counts,
// online dots), friend requests and group invitations, search results and the open
// conversation (messages with their receipt marks, my sends in flight, who is typing; the
// actions on the friend or the group, and a group's member panel). Text is always set as text, never
// as HTML. Elements carry data attributes (data-conv, data-seq, data-act, ...) that app.js
// listens to by delegation; nothing here handles events. No sockets.

import { seqOf } from "./session.js";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** A button saying `text`, labelled "`text` `what`" for screen readers. */
function action(text, attrs, what) {
  return el("button", { ...attrs, "aria-label": `${text} ${what}`, text });
}

/** Put `nodes` into `container` in order, moving only what is out of place. */
function place(container, nodes) {
  let cursor = container.firstChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextSibling;
    else container.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

function clock(tsMs) {
  const d = new Date(Number(tsMs || 0));
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "Bobby (bob)", or "bob" when the nickname is the account. */
function named(u) {
  return u.nickname && u.nickname !== u.account ? `${u.nickname} (${u.account})` : u.account;
}

function host(url) {
  return url.replace(/^wss?:\/\//, "").replace(/\/ws$/, "");
}

/** The rows of one list, kept between drawings: a row is rebuilt only when its signature
 * changes (then what had the focus in it gets it back), so focus survives a redraw. */
class Rows {
  constructor() {
    this.nodes = new Map(); // key -> element
    this.used = new Set();
  }

  get(key, sig, build) {
    let node = this.nodes.get(key);
    if (!node || node.dataset.sig !== sig) {
      const fresh = build();
      fresh.dataset.sig = sig;
      if (node) {
        const focused = node.contains(document.activeElement) ? document.activeElement : null;
        node.replaceWith(fresh);
        if (focused) refocus(focused, fresh);
      }
      node = fresh;
      this.nodes.set(key, node);
    }
    this.used.add(key);
    return node;
  }

  /** Forget the rows not asked for since the last call. */
  done() {
    for (const key of [...this.nodes.keys()]) if (!this.used.has(key)) this.nodes.delete(key);
    this.used.clear();
  }

  clear() {
    this.nodes.clear();
    this.used.clear();
  }
}

const IDENTITY = ["data-act", "data-conv", "data-seq", "data-user", "data-pending"];

/** Focus the element of `fresh` that stands where `old` stood (same tag and identity). */
function refocus(old, fresh) {
  const attrs = IDENTITY.filter((a) => old.hasAttribute(a));
  const sel =
    old.tagName.toLowerCase() + attrs.map((a) => `[${a}="${CSS.escape(old.getAttribute(a))}"]`).join("");
  const twin = fresh.matches(sel) ? fresh : fresh.querySelector(sel);
  if (twin) twin.focus({ preventScroll: true });
}

export class Views {
  constructor() {
    this.messages = new Rows(); // of the open conversation
    this.messagesOf = "";
    this.convs = new Rows();
    this.requests = new Rows();
    this.memberRows = new Rows(); // the member panel's rows
    this.blockedRows = new Rows();
    this.inviteSig = "";
  }

  status(state) {
    const s = $("status");
    const offline = state.me ? "offline" : "idle";
    s.dataset.state = state.link.up ? (state.me ? "online" : "connected") : offline;
    const away = state.me ? "offline, reconnecting…" : "not connected";
    const where = state.link.up ? `connected to ${host(state.link.url)}` : away;
    s.textContent = state.me ? `${state.me.account} · ${where}` : where;
  }

  screen(loggedIn) {
    $("login-view").hidden = loggedIn;
    $("chat-view").hidden = !loggedIn;
  }

  sidebar(state) {
    const items = state.sidebar().map((e) => {
      const unread = state.unread(e);
      const typing = state.typists(e.convId, Date.now()).length > 0;
      const label = [
        e.title,
        e.group ? "group" : e.ended ? "no longer friends" : e.online ? "online" : "offline",
        !e.group && state.blocked.has(e.peerId) ? "blocked" : "",
        unread ? `${unread} unread` : "",
        typing ? "typing" : "",
      ]
        .filter(Boolean)
        .join(", ");
      const sig = [label, e.convId === state.open].join("\u0001");
      return this.convs.get(e.convId, sig, () => el(
        "li",
        { "data-conv": e.convId },
        el(
          "button",
          {
            class: `conv${e.convId === state.open ? " open" : ""}${e.ended ? " ended" : ""}`,
            "data-conv": e.convId,
            "aria-label": label,
            "aria-current": e.convId === state.open ? "true" : false,
          },
          el("span", {
            class: `dot${e.group ? " group" : e.online ? " online" : ""}`,
            "aria-hidden": "true",
            text: e.group ? "#" : "",
          }),
          el("span", { class: "title", text: e.title }),
          unread ? el("span", { class: "unread", text: String(unread) }) : null,
        ),
      ));
    });
    this.convs.done();
    place($("conversations"), items);
    $("conversations-empty").hidden = items.length > 0;

    const requests = state.incoming().map((f) =>
      this.requests.get(`in${f.userId}`, "", () =>
        el(
          "li",
          { "data-user": f.userId },
          el("span", { text: `${f.nickname || f.account} (${f.account}) asks to be your friend` }),
          action("Accept", { "data-act": "accept", "data-user": f.userId }, f.account),
          action("Decline", { "data-act": "decline", "data-user": f.userId }, f.account),
        ),
      ),
    );
    const sent = state.outgoing().map((f) =>
      this.requests.get(`out${f.userId}`, "", () =>
        el("li", { "data-user": f.userId, text: `request sent to ${f.account}` }),
      ),
    );
    const invites = state.invitations().map((i) => {
      const who = i.from ? i.from.nickname || i.from.account : "someone";
      const what = `the invitation of ${who} to group ${i.groupId}`;
      return this.requests.get(`inv${i.groupId}`, "", () =>
        el(
          "li",
          { "data-group": i.groupId },
          el("span", { text: `${who} invites you to group ${i.groupId}` }),
          el("button", {
            "data-act": "join-invite",
            "data-group": i.groupId,
            "aria-label": `Join: accept ${what}`,
            text: "Join",
          }),
          el("button", {
            "data-act": "drop-invite",
            "data-group": i.groupId,
            "aria-label": `Ignore ${what}`,
            text: "Ignore",
          }),
        ),
      );
    });
    this.requests.done();
    place($("request-list"), [...requests, ...invites, ...sent]);
    $("requests").hidden = requests.length + invites.length + sent.length === 0;

    const blocked = state.blockedUsers.map((u) =>
      this.blockedRows.get(u.userId, u.account, () =>
        el(
          "li",
          { "data-user": u.userId },
          el("span", { text: named(u) }),
          action("Unblock", { "data-act": "unblock", "data-user": u.userId }, u.account),
        ),
      ),
    );
    this.blockedRows.done();
    place($("blocked-list"), blocked);
    $("blocked").hidden = blocked.length === 0;
  }

  searchResults(state) {
    const box = $("search-results");
    const s = state.search;
    box.hidden = !s;
    if (!s) return;
    const items = s.hits.map((m) => {
      const e = state.entries.get(m.convId);
      return el(
        "li",
        {},
        el(
          "button",
          { "data-act": "jump", "data-conv": m.convId, "data-seq": String(seqOf(m.seq)) },
          el("span", { class: "who", text: `${e ? e.title : m.convId} · ${m.senderAccount}` }),
          el("span", { class: "body", text: m.body }),
        ),
      );
    });
    if (!items.length) items.push(el("li", { class: "none", text: "no messages found" }));
    if (s.more) items.push(el("li", {}, el("button", { "data-act": "more", text: "More results" })));
    place($("search-list"), items);
    $("search-title").textContent = `Messages with “${s.query}”`;
  }

  found(listId, rows) {
    place($(listId), rows.map((r) => el("li", {}, ...r)));
  }

  button(attrs, text, what) {
    return action(text, attrs, what);
  }

  text(t) {
    return el("span", { text: t });
  }

  /** The open conversation. */
  pane(state) {
    const e = state.entries.get(state.open);
    document.body.classList.toggle("chat-open", Boolean(e));
    $("pane").hidden = !e;
    $("pane-empty").hidden = Boolean(e);
    if (!e) return;
    if (this.messagesOf !== state.open) {
      this.messages.clear();
      this.messagesOf = state.open;
    }
    $("pane-title").textContent = e.title;
    const t = state.thread(e.convId);
    const blocked = !e.group && state.blocked.has(e.peerId);
    const owner = state.owns(e);
    $("pane-sub").textContent = e.group
      ? `group · ${t.members} members${owner ? " · you own it" : ""}`
      : e.ended
        ? "no longer friends"
        : `${e.online ? "online" : "offline"}${blocked ? " · blocked" : ""}`;
    this.actions(state, e, blocked);
    this.roster(state, e, owner);
    const banner = $("pane-note");
    banner.textContent = e.ended
      ? `${e.ended}: this conversation is read-only`
      : blocked
        ? `You block ${e.title}: their messages and friend requests are refused, ` +
          "and they see you offline."
        : "";
    banner.hidden = !banner.textContent;
    $("composer").hidden = Boolean(e.ended);

    const rows = [];
    const note = (key, text) => this.messages.get(key, "", () => el("li", { class: "note", text }));
    if (t.loading) rows.push(note("loading", "loading…"));
    else if (t.complete && t.seqs.length) rows.push(note("start", "start of the conversation"));
    for (const msg of t.shown()) {
      const seq = seqOf(msg.seq);
      const mine = state.me && msg.sender === state.me.userId;
      const amend = t.amends.get(seq);
      const mark = mine ? state.mark(msg) : null;
      const editing = state.editing?.seq === seq;
      const found = state.found?.convId === e.convId && state.found.seq === seq;
      const sig = [msg.body, amend?.seq, mark?.text, editing, found].join("\u0001");
      const flags = { editing, found };
      rows.push(this.messages.get(`m${seq}`, sig, () => this.message(msg, mine, amend, mark, flags)));
    }
    for (const p of t.pending) {
      const sig = [p.body, p.error].join("\u0001");
      rows.push(this.messages.get(`p${p.clientMsgId}`, sig, () => this.pending(p)));
    }
    this.messages.done();
    place($("messages"), rows);

    const typists = state.typists(e.convId, Date.now());
    $("typing").textContent = typists.length
      ? `${typists.join(", ")} ${typists.length > 1 ? "are" : "is"} typing…`
      : "";
    const ed = $("editing");
    ed.hidden = !state.editing;
    if (state.editing) $("editing-seq").textContent = String(state.editing.seq);
  }

  /** The buttons of the open conversation's header: Members and Leave for a group; Block or
   * Unblock and Unfriend for a friend; Remove from list for an ended friendship. */
  actions(state, e, blocked) {
    const show = (id, on, label) => {
      const b = $(id);
      b.hidden = !on;
      if (on && label && b.getAttribute("aria-label") !== label) b.setAttribute("aria-label", label);
    };
    const live = !e.group && !e.ended;
    show("members-toggle", e.group, `Members of ${e.title}`);
    $("members-toggle").setAttribute("aria-expanded", String(e.group && state.membersOpen));
    show("leave", e.group, `Leave the group ${e.title}`);
    show("unfriend", live, `Unfriend ${e.title}`);
    show("block", live, `${blocked ? "Unblock" : "Block"} ${e.title}`);
    $("block").textContent = blocked ? "Unblock" : "Block";
    show("forget", Boolean(e.ended), `Remove ${e.title} from the list`);
  }

  /** The member panel of the open group: who is in it (the owner marked, online dots), and
   * for its owner Remove and Make owner on each other member and the invitation form. */
  roster(state, e, owner) {
    const panel = $("members");
    panel.hidden = !(e.group && state.membersOpen);
    if (panel.hidden) return;
    const list = state.members.get(e.convId);
    const me = state.me ? state.me.userId : "";
    $("members-title").textContent = list ? `Members (${list.length})` : "Members";
    const rows = (list || []).map((m) => {
      const name = named(m);
      const isOwner = m.userId === e.owner;
      const sig = [name, m.online, isOwner, owner].join("\u0001");
      return this.memberRows.get(m.userId, sig, () => {
        const tags = [isOwner ? "owner" : "", m.userId === me ? "you" : ""].filter(Boolean);
        const label = [name, m.online ? "online" : "offline", ...tags].join(", ");
        return el(
          "li",
          { "data-user": m.userId, "aria-label": label },
          el("span", { class: `dot${m.online ? " online" : ""}`, "aria-hidden": "true" }),
          el("span", { class: "title", text: name }),
          isOwner ? el("span", { class: "badge", "data-role": "owner", text: "owner" }) : null,
          m.userId === me ? el("span", { class: "badge", text: "you" }) : null,
          owner && m.userId !== me
            ? el(
                "span",
                { class: "member-actions" },
                el("button", {
                  "data-act": "owner",
                  "data-user": m.userId,
                  "aria-label": `Make ${m.account} the owner`,
                  text: "Make owner",
                }),
                el("button", {
                  "data-act": "kick",
                  "data-user": m.userId,
                  "aria-label": `Remove ${m.account} from the group`,
                  text: "Remove",
                }),
              )
            : null,
        );
      });
    });
    const loading = () => el("li", { class: "note", text: "loading…" });
    if (!list) rows.push(this.memberRows.get("loading", "", loading));
    this.memberRows.done();
    place($("member-list"), rows);

    const form = $("invite-form");
    form.hidden = !owner || !list;
    if (form.hidden) return;
    const friends = state.invitable(e.convId);
    const sig = friends.map((f) => f.userId).join(",");
    if (sig !== this.inviteSig) {
      this.inviteSig = sig;
      const select = $("invite-select");
      const kept = select.value;
      select.replaceChildren(
        ...friends.map((f) => el("option", { value: f.userId, text: named(f) })),
      );
      if (!friends.length) select.append(el("option", { value: "", text: "no friend to invite" }));
      if (friends.some((f) => f.userId === kept)) select.value = kept;
    }
    $("invite-select").disabled = !friends.length;
    $("invite-submit").disabled = !friends.length;
  }

  message(msg, mine, amend, mark, { editing, found }) {
    const seq = seqOf(msg.seq);
    const recalled = amend && amend.kind === "MESSAGE_KIND_RECALL";
    const body = recalled ? "message recalled" : amend ? amend.body : msg.body;
    const who = mine ? "me" : msg.senderAccount || `user ${msg.sender}`;
    return el(
      "li",
      {
        class: ["msg", mine && "mine", recalled && "recalled", editing && "editing", found && "found"]
          .filter(Boolean)
          .join(" "),
        "data-seq": String(seq),
        "data-sender": msg.senderAccount || "",
        tabindex: "-1",
      },
      el(
        "div",
        { class: "meta" },
        el("span", { class: "who", text: who }),
        el("time", { datetime: new Date(Number(msg.tsMs || 0)).toISOString(), text: clock(msg.tsMs) }),
        amend && !recalled ? el("span", { class: "edited", text: "(edited)" }) : null,
        mark
          ? el("span", {
              class: "mark",
              "data-mark": mark.mark,
              title: mark.words,
              "aria-label": mark.words,
              text: mark.text,
            })
          : null,
      ),
      el("p", { class: "body", text: body }),
      mine && !recalled
        ? el(
            "div",
            { class: "actions" },
            action("Edit", { "data-act": "edit", "data-seq": String(seq) }, `message ${seq}`),
            action("Recall", { "data-act": "recall", "data-seq": String(seq) }, `message ${seq}`),
          )
        : null,
    );
  }

  pending(p) {
    return el(
      "li",
      { class: `msg mine pending${p.error ? " failed" : ""}`, "data-pending": p.clientMsgId },
      el(
        "div",
        { class: "meta" },
        el("span", { class: "who", text: "me" }),
        el("span", {
          class: "mark",
          "data-mark": p.error ? "failed" : "sending",
          text: p.error ? `not sent: ${p.error}` : "sending…",
        }),
      ),
      el("p", { class: "body", text: p.body }),
      p.error
        ? el(
            "div",
            { class: "actions" },
            action("Dismiss", { "data-act": "dismiss", "data-pending": p.clientMsgId }, "the message"),
          )
        : null,
    );
  }
}
