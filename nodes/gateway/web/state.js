// What the web client shows, as data: my conversations (title, online dot, unread count, the
// peer's cursors for the receipt marks), the loaded messages of each (by seq, with the edits
// and recalls folded into the messages they change), my sends still in flight, group read
// counts, who is typing, friend requests, group invitations, whom I block, the members of the
// groups whose member list was fetched, friendships the other side ended, and search results.
// Every change goes through a method here; views.js draws from it. No sockets, no DOM.

import { seqOf } from "./session.js";

export const TYPING_SHOW_MS = 5000;

const EDIT = "MESSAGE_KIND_EDIT";
const RECALL = "MESSAGE_KIND_RECALL";
const isEvent = (msg) => msg.kind === EDIT || msg.kind === RECALL;

class Thread {
  constructor() {
    this.messages = new Map(); // seq -> ChatMessage (JSON)
    this.seqs = []; // ascending
    this.amends = new Map(); // seq -> the newest edit or recall of it
    this.pending = []; // {clientMsgId, body, error}
    this.counts = new Map(); // group: seq -> {read, delivered}
    this.members = 0;
    this.fetched = false; // the newest page was asked for
    this.loading = false;
    this.newerMissing = false; // a search jump loaded a page mid-way
    this.complete = false; // the oldest message is loaded
  }

  get oldest() {
    return this.seqs.length ? this.seqs[0] : 0;
  }

  get newest() {
    return this.seqs.length ? this.seqs[this.seqs.length - 1] : 0;
  }

  put(msg) {
    const seq = seqOf(msg.seq);
    if (!this.messages.has(seq)) {
      let i = this.seqs.length;
      while (i > 0 && this.seqs[i - 1] > seq) i -= 1;
      this.seqs.splice(i, 0, seq);
    }
    this.messages.set(seq, msg);
    if (isEvent(msg)) {
      const ref = seqOf(msg.refSeq);
      const known = this.amends.get(ref);
      if (!known || seqOf(known.seq) < seq) this.amends.set(ref, msg);
    }
  }

  reset() {
    this.messages.clear();
    this.seqs = [];
    this.complete = false;
  }

  /** The messages to show, oldest first (events folded away). */
  shown() {
    return this.seqs.map((s) => this.messages.get(s)).filter((m) => !isEvent(m));
  }
}

export class State {
  constructor() {
    this.me = null; // LoginReply
    this.link = { up: false, url: "" };
    this.entries = new Map(); // conv id -> entry
    this.threads = new Map();
    this.friends = []; // Friend, all states
    this.blocked = new Set(); // user ids I block
    this.blockedUsers = []; // UserSummary of each, by account
    this.invites = new Map(); // group id -> {groupId, from (UserSummary)}: invitations to answer
    this.ended = new Map(); // conv id -> why: a friendship the other side ended (kept, read-only)
    this.members = new Map(); // group id -> GroupMember[] (the last GroupUsers answer)
    this.membersOpen = false; // the open group's member panel is shown
    this.open = ""; // conv id of the open conversation
    this.typing = new Map(); // conv id -> Map(account -> shown until, ms)
    this.search = null; // {query, hits, more}
    this.editing = null; // {convId, seq}: the message the composer edits
    this.found = null; // {convId, seq}: the search hit shown
  }

  clear() {
    Object.assign(this, new State());
  }

  thread(convId) {
    if (!this.threads.has(convId)) this.threads.set(convId, new Thread());
    return this.threads.get(convId);
  }

  ensure(convId, group, peerId, title) {
    let e = this.entries.get(convId);
    if (!e) {
      e = {
        convId,
        group,
        peerId,
        title,
        online: false,
        lastSeq: 0,
        readSeq: 0,
        peerReadSeq: 0,
        peerDeliveredSeq: 0,
        floorSeq: 0,
        owner: "", // groups: the owner's user id
        ended: "", // 1:1: why the friendship ended (the other side ended it)
      };
      this.entries.set(convId, e);
    }
    return e;
  }

  unread(e) {
    return Math.max(0, e.lastSeq - e.readSeq);
  }

  /** Friends first, then groups, each by title. */
  sidebar() {
    return [...this.entries.values()].sort(
      (a, b) => a.group - b.group || a.title.localeCompare(b.title) || a.convId.localeCompare(b.convId),
    );
  }

  setFriends(friends, blocked = []) {
    this.friends = friends;
    this.blocked = new Set(blocked.map((u) => u.userId));
    this.blockedUsers = blocked;
    const mine = new Set();
    for (const f of friends) {
      if (f.state !== "FRIEND_STATE_ACCEPTED" || !f.convId) continue;
      mine.add(f.convId);
      const e = this.ensure(f.convId, false, f.userId, f.nickname || f.account);
      e.title = f.nickname || f.account;
      e.online = Boolean(f.online);
    }
    for (const id of this.ended.keys()) if (mine.has(id)) this.ended.delete(id);
    for (const [id, e] of this.entries) {
      if (e.group || mine.has(id)) continue;
      if (this.ended.has(id)) {
        e.ended = this.ended.get(id);
        e.online = false;
      } else this.entries.delete(id);
    }
  }

  /** The other side ended our friendship: its conversation stays listed, marked and
   * read-only, until dismissed (the server lists it no more). */
  friendshipEnded(convId, user, why) {
    this.ended.set(convId, why);
    const e = this.ensure(convId, false, user.userId, user.nickname || user.account);
    e.ended = why;
    e.online = false;
  }

  /** Forget a conversation (one whose friendship ended, or one I left). */
  forget(convId) {
    this.ended.delete(convId);
    this.entries.delete(convId);
    this.members.delete(convId);
    if (this.open === convId) {
      this.open = "";
      this.editing = null;
    }
  }

  setGroups(groups) {
    const mine = new Set(groups.map((g) => g.groupId));
    for (const g of groups) {
      const e = this.ensure(g.groupId, true, g.groupId, g.name);
      e.title = g.name;
      e.owner = g.owner || "";
      this.thread(g.groupId).members = g.members || 0;
      this.invites.delete(g.groupId);
    }
    for (const [id, e] of this.entries) {
      if (e.group && !mine.has(id)) {
        this.entries.delete(id);
        this.members.delete(id);
      }
    }
  }

  /** Do I own group entry `e`? */
  owns(e) {
    return Boolean(e && e.group && this.me && e.owner === this.me.userId);
  }

  /** Accepted friends who are not members of group `groupId` (whom its owner may invite). */
  invitable(groupId) {
    const inside = new Set((this.members.get(groupId) || []).map((m) => m.userId));
    return this.friends
      .filter((f) => f.state === "FRIEND_STATE_ACCEPTED" && !inside.has(f.userId))
      .sort((a, b) => a.account.localeCompare(b.account));
  }

  applySync(conversations) {
    for (const c of conversations) {
      const group = c.kind === "CONV_KIND_GROUP";
      const e = this.ensure(c.convId, group, c.peerId, c.title || c.peerId);
      e.lastSeq = Math.max(e.lastSeq, seqOf(c.lastSeq));
      e.readSeq = Math.max(e.readSeq, seqOf(c.readSeq));
      e.floorSeq = seqOf(c.floorSeq);
      e.peerReadSeq = Math.max(e.peerReadSeq, seqOf(c.peerReadSeq));
      e.peerDeliveredSeq = Math.max(
        e.peerDeliveredSeq,
        seqOf(c.peerDeliveredSeq),
        seqOf(c.peerReadSeq),
      );
    }
  }

  setPresence(userId, online) {
    for (const e of this.entries.values()) {
      if (!e.group && !e.ended && e.peerId === userId) e.online = online;
    }
    for (const f of this.friends) if (f.userId === userId) f.online = online;
    for (const list of this.members.values()) {
      for (const m of list) if (m.userId === userId) m.online = online;
    }
  }

  /** An owner invited me to group `groupId` (NOTICE_GROUP_INVITE). */
  invited(groupId, from) {
    if (!this.entries.has(groupId)) this.invites.set(groupId, { groupId, from });
  }

  /** Invitations to answer, oldest first. */
  invitations() {
    return [...this.invites.values()];
  }

  /** Keep a message; true if its conversation is new to the sidebar. */
  addMessage(msg) {
    const known = this.entries.has(msg.convId);
    const mine = this.me && msg.sender === this.me.userId;
    let e;
    if (msg.toGroup) e = this.ensure(msg.convId, true, msg.toGroup, `group ${msg.toGroup}`);
    else if (mine) e = this.ensure(msg.convId, false, msg.toUser, msg.toUser);
    else e = this.ensure(msg.convId, false, msg.sender, msg.senderAccount);
    const seq = seqOf(msg.seq);
    e.lastSeq = Math.max(e.lastSeq, seq);
    if (mine) e.readSeq = Math.max(e.readSeq, seq);
    const t = this.thread(msg.convId);
    if (!t.newerMissing || seq <= t.newest + 1) t.put(msg);
    t.pending = t.pending.filter((p) => p.clientMsgId !== msg.clientMsgId);
    this.typing.get(msg.convId)?.delete(msg.senderAccount);
    return !known;
  }

  addPending(convId, clientMsgId, body) {
    this.thread(convId).pending.push({ clientMsgId, body, error: "" });
  }

  failed(convId, clientMsgId, error) {
    for (const p of this.thread(convId).pending) if (p.clientMsgId === clientMsgId) p.error = error;
  }

  dropPending(convId, clientMsgId) {
    const t = this.thread(convId);
    t.pending = t.pending.filter((p) => p.clientMsgId !== clientMsgId);
  }

  receipt(r) {
    const e = this.entries.get(r.convId);
    if (!e) return;
    if (this.me && r.userId === this.me.userId) {
      e.readSeq = Math.max(e.readSeq, seqOf(r.readSeq));
    } else {
      e.peerReadSeq = Math.max(e.peerReadSeq, seqOf(r.readSeq));
      e.peerDeliveredSeq = Math.max(e.peerDeliveredSeq, seqOf(r.deliveredSeq), seqOf(r.readSeq));
    }
  }

  setCounts(reply) {
    const t = this.thread(reply.convId);
    t.members = reply.members || t.members;
    for (const c of reply.counts || []) {
      t.counts.set(seqOf(c.seq), { read: c.read || 0, delivered: c.delivered || 0 });
    }
  }

  /** Seqs of my own messages loaded in a conversation, ascending. */
  mySeqs(convId) {
    if (!this.me) return [];
    const t = this.thread(convId);
    return t.seqs.filter((s) => {
      const m = t.messages.get(s);
      return m.sender === this.me.userId && !isEvent(m);
    });
  }

  /** The receipt of one of my stored messages, as the terminal client marks it: {mark: sent,
   * delivered or read; text: ✓, ✓✓, ✓✓ read (groups: with how many of the others); words}. */
  mark(msg) {
    const sent = { mark: "sent", text: "✓", words: "sent" };
    const e = this.entries.get(msg.convId);
    const seq = seqOf(msg.seq);
    if (!e) return sent;
    if (e.group) {
      const t = this.thread(msg.convId);
      const c = t.counts.get(seq);
      const others = Math.max(t.members - 1, 0);
      if (!c || !others) return sent;
      if (c.read) {
        const mark = c.read >= others ? "read" : "delivered";
        return { mark, text: `✓✓ read ${c.read}/${others}`, words: `read by ${c.read} of ${others}` };
      }
      if (!c.delivered) return sent;
      return {
        mark: "delivered",
        text: `✓✓ ${c.delivered}/${others}`,
        words: `delivered to ${c.delivered} of ${others}`,
      };
    }
    if (e.peerReadSeq >= seq) return { mark: "read", text: "✓✓ read", words: "read" };
    if (e.peerDeliveredSeq >= seq) return { mark: "delivered", text: "✓✓", words: "delivered" };
    return sent;
  }

  setTyping(convId, account, now) {
    if (!this.typing.has(convId)) this.typing.set(convId, new Map());
    this.typing.get(convId).set(account, now + TYPING_SHOW_MS);
  }

  typists(convId, now) {
    const shown = this.typing.get(convId);
    if (!shown) return [];
    for (const [account, until] of shown) if (until <= now) shown.delete(account);
    return [...shown.keys()].sort();
  }

  /** Friend requests sent to me, waiting for my answer. */
  incoming() {
    return this.friends.filter((f) => f.state === "FRIEND_STATE_INCOMING");
  }

  outgoing() {
    return this.friends.filter((f) => f.state === "FRIEND_STATE_OUTGOING");
  }
}
