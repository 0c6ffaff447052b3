// Friends, groups and message search, from the sidebar: find users by account prefix and ask
// them to be friends (AddFriend; accepting a request is AddFriend back, declining is
// RemoveFriend with `decline`), find, join and create groups, answer group invitations (an
// invitation is accepted by joining: GroupJoin), and search my messages (SearchMessages, a page
// at a time; a result opens its conversation at that message). From the open conversation's
// header: a friend can be unfriended (RemoveFriend), blocked and unblocked (Block, Unblock); a
// group's member panel (GroupUsers, fetched again every MEMBERS_EVERY_MS while shown, as joins
// are not pushed) lets its owner invite a friend (GroupInvite), remove a member (GroupKick) and
// hand the group over (GroupOwner), and any member leave (GroupLeave). What cannot be undone
// asks first. Talks to the gateway only through the Session.

import { seqOf } from "./session.js";

const $ = (id) => document.getElementById(id);
const MEMBERS_EVERY_MS = 2000;

export class People {
  /** app: {state, session, views, render(), toast(text, error), refresh(), chat} */
  constructor(app) {
    this.app = app;
    this.form("friend-form", () => this.findUsers());
    this.form("group-form", () => this.findGroups());
    this.form("search-form", () => this.search(false));
    $("group-create").addEventListener("click", () => this.createGroup());
    $("search-close").addEventListener("click", () => this.closeSearch());
    const lists = ["user-results", "group-results", "request-list", "search-list"];
    for (const id of [...lists, "member-list", "blocked-list"]) {
      $(id).addEventListener("click", (ev) => this.clicked(ev));
    }
    $("members-toggle").addEventListener("click", () => this.toggleMembers());
    $("leave").addEventListener("click", () => this.leave());
    $("unfriend").addEventListener("click", () => this.unfriend());
    $("block").addEventListener("click", () => this.block());
    $("forget").addEventListener("click", () => this.forget());
    this.form("invite-form", () => this.invite());
    setInterval(() => this.members(), MEMBERS_EVERY_MS);
  }

  /** The open conversation's entry, if it is a group (or, with `group` false, a friend). */
  opened(group) {
    const e = this.app.state.entries.get(this.app.state.open);
    return e && e.group === group ? e : null;
  }

  /** Run an action on the server; a refusal is shown with its error code. */
  async act(job) {
    try {
      return (await job()) || {};
    } catch (err) {
      this.app.toast(this.app.explain(err), true);
      return null;
    }
  }

  // ---- a group's members
  toggleMembers() {
    const { state } = this.app;
    state.membersOpen = !state.membersOpen;
    this.app.render();
    if (state.membersOpen) this.members();
  }

  /** Fetch the member list of the open group, when its panel is shown. */
  async members() {
    const { state, session } = this.app;
    const e = this.opened(true);
    if (!e || !state.membersOpen || !state.me || !state.link.up) return;
    try {
      const reply = await session.call("GroupUsers", { groupId: e.convId });
      if (!state.entries.has(e.convId)) return; // left meanwhile
      state.members.set(e.convId, reply.members || []);
      state.thread(e.convId).members = (reply.members || []).length;
      this.app.render();
    } catch (err) {
      if (err.code === "NOT_MEMBER" || err.code === "NOT_FOUND") this.app.refresh();
    }
  }

  member(userId) {
    const e = this.opened(true);
    const list = e ? this.app.state.members.get(e.convId) || [] : [];
    return list.find((m) => m.userId === userId);
  }

  async invite() {
    const e = this.opened(true);
    const userId = $("invite-select").value;
    if (!e || !userId) return;
    const friend = this.app.state.friends.find((f) => f.userId === userId);
    const name = friend ? friend.account : `user ${userId}`;
    if (await this.act(() => this.app.session.call("GroupInvite", { groupId: e.convId, userId }))) {
      this.app.toast(`invited ${name} to ${e.title}: they may join now`);
    }
  }

  async kick(userId) {
    const e = this.opened(true);
    const m = this.member(userId);
    if (!e || !m) return;
    const ok = await this.app.ask(
      `Remove ${m.account} from ${e.title}? They can come back only if they join again.`,
      `Remove ${m.account}`,
    );
    if (!ok) return;
    if (await this.act(() => this.app.session.call("GroupKick", { groupId: e.convId, userId }))) {
      this.app.toast(`removed ${m.account} from ${e.title}`);
      this.app.refresh();
    }
    await this.members(); // also after a refusal: the list may have been out of date
    this.refocus();
  }

  async handOver(userId) {
    const e = this.opened(true);
    const m = this.member(userId);
    if (!e || !m) return;
    const ok = await this.app.ask(
      `Hand ${e.title} to ${m.account}? They become its owner, and you an ordinary member.`,
      `Make ${m.account} the owner`,
    );
    if (!ok) return;
    const reply = await this.act(() =>
      this.app.session.call("GroupOwner", { groupId: e.convId, userId }),
    );
    if (reply) {
      e.owner = reply.group ? reply.group.owner : userId;
      this.app.toast(`${m.account} owns ${e.title} now`);
      this.app.render();
      this.app.refresh();
    }
    await this.members();
    this.refocus();
  }

  async leave() {
    const { state } = this.app;
    const e = this.opened(true);
    if (!e) return;
    const owning = state.owns(e)
      ? " You own it: hand it to a member first if it should keep an owner."
      : "";
    if (!(await this.app.ask(`Leave ${e.title}?${owning}`, "Leave the group"))) return;
    if (await this.act(() => this.app.session.call("GroupLeave", { groupId: e.convId }))) {
      state.forget(e.convId);
      this.app.toast(`you left ${e.title}`);
      this.app.back();
      this.app.refresh();
    }
  }

  /** After a dialog, the focus goes back where it was; if that is gone, to the panel. */
  refocus() {
    if (document.activeElement && document.activeElement !== document.body) return;
    const toggle = $("members-toggle");
    if (!toggle.hidden) toggle.focus();
  }

  // ---- a friend
  async unfriend() {
    const e = this.opened(false);
    if (!e || e.ended) return;
    const ok = await this.app.ask(
      `Unfriend ${e.title}? Your conversation leaves both lists; a new friendship starts a new one.`,
      `Unfriend ${e.title}`,
    );
    if (!ok) return;
    if (await this.act(() => this.app.session.call("RemoveFriend", { userId: e.peerId }))) {
      this.app.state.forget(e.convId);
      this.app.toast(`no longer friends with ${e.title}`);
      this.app.back();
      this.app.refresh();
    }
  }

  async block() {
    const { state } = this.app;
    const e = this.opened(false);
    if (!e || e.ended) return;
    const blocked = state.blocked.has(e.peerId);
    if (!blocked) {
      const ok = await this.app.ask(
        `Block ${e.title}? Their messages and friend requests are refused, and they see you ` +
          "offline. Your friendship stays: Unblock restores it.",
        `Block ${e.title}`,
      );
      if (!ok) return;
    }
    const method = blocked ? "Unblock" : "Block";
    if (await this.act(() => this.app.session.call(method, { userId: e.peerId }))) {
      if (blocked) state.blocked.delete(e.peerId);
      else state.blocked.add(e.peerId);
      this.app.toast(blocked ? `unblocked ${e.title}` : `blocked ${e.title}`);
      this.app.render();
      this.app.refresh();
    }
    $("block").focus();
  }

  /** Lift a block from the Blocked list (of friends and others alike). */
  async unblock(userId) {
    const { state } = this.app;
    const u = state.blockedUsers.find((b) => b.userId === userId);
    if (await this.act(() => this.app.session.call("Unblock", { userId }))) {
      state.blocked.delete(userId);
      state.blockedUsers = state.blockedUsers.filter((b) => b.userId !== userId);
      this.app.toast(`unblocked ${u ? u.account : `user ${userId}`}`);
      this.app.render();
      this.app.refresh();
      $("friend-input").focus();
    }
  }

  /** Drop a conversation whose friendship the other side ended. */
  forget() {
    const e = this.opened(false);
    if (!e || !e.ended) return;
    this.app.state.forget(e.convId);
    this.app.back();
  }

  // ---- invitations
  async joinInvite(groupId) {
    const { state } = this.app;
    const reply = await this.act(() => this.app.session.call("GroupJoin", { groupId }));
    if (!reply) return; // the invitation stays, to try again or ignore
    state.invites.delete(groupId);
    await this.app.refresh();
    this.app.chat.open(reply.group.groupId);
  }

  dropInvite(groupId) {
    this.app.state.invites.delete(groupId);
    this.app.render();
    $("search-input").focus();
  }

  form(id, action) {
    $(id).addEventListener("submit", (ev) => {
      ev.preventDefault();
      action();
    });
  }

  async run(job) {
    try {
      return await job();
    } catch (err) {
      this.app.toast(this.app.words(err), true);
      return null;
    }
  }

  async findUsers() {
    const prefix = $("friend-input").value.trim().toLowerCase();
    if (!prefix) return;
    const reply = await this.run(() => this.app.session.call("SearchUsers", { prefix }));
    if (!reply) return;
    const { state, views } = this.app;
    const friends = new Map(state.friends.map((f) => [f.userId, f.state]));
    const rows = (reply.users || [])
      .filter((u) => u.userId !== state.me.userId)
      .map((u) => {
        const label = `${u.nickname || u.account} (${u.account})`;
        const st = friends.get(u.userId);
        if (st === "FRIEND_STATE_ACCEPTED") return [views.text(`${label} · friend`)];
        if (st === "FRIEND_STATE_OUTGOING") return [views.text(`${label} · request sent`)];
        const act = st === "FRIEND_STATE_INCOMING" ? "Accept" : "Add friend";
        return [
          views.text(label),
          views.button({ "data-act": "add", "data-user": u.userId }, act, u.account),
        ];
      });
    views.found("user-results", rows.length ? rows : [[views.text("nobody found")]]);
  }

  async addFriend(userId) {
    const reply = await this.run(() => this.app.session.call("AddFriend", { userId }));
    if (!reply) return;
    this.app.toast(reply.result === "ADD_FRIEND_ACCEPTED" ? "you are friends now" : "friend request sent");
    $("user-results").replaceChildren();
    this.app.refresh();
  }

  async decline(userId) {
    if (await this.run(() => this.app.session.call("RemoveFriend", { userId, decline: true }))) {
      this.app.refresh();
    }
  }

  async findGroups() {
    const prefix = $("group-input").value.trim();
    if (!prefix) return;
    const reply = await this.run(() => this.app.session.call("GroupSearch", { prefix }));
    if (!reply) return;
    const { state, views } = this.app;
    const rows = (reply.groups || []).map((g) => {
      const label = `${g.name} · ${g.members || 0}/${g.userLimit || 0} members`;
      if (state.entries.has(g.groupId)) {
        const open = views.button({ "data-act": "open", "data-conv": g.groupId }, "Open", g.name);
        return [views.text(label), open];
      }
      return [
        views.text(label),
        views.button({ "data-act": "join", "data-group": g.groupId }, "Join", g.name),
      ];
    });
    views.found("group-results", rows.length ? rows : [[views.text("no such group")]]);
  }

  async joinGroup(groupId) {
    const reply = await this.run(() => this.app.session.call("GroupJoin", { groupId }));
    if (!reply) return;
    $("group-results").replaceChildren();
    await this.app.refresh();
    this.app.chat.open(reply.group.groupId);
  }

  async createGroup() {
    const name = $("group-input").value.trim();
    if (!name) {
      this.app.toast("type the new group's name first", true);
      return;
    }
    const reply = await this.run(() => this.app.session.call("GroupCreate", { name }));
    if (!reply) return;
    $("group-input").value = "";
    $("group-results").replaceChildren();
    await this.app.refresh();
    this.app.chat.open(reply.group.groupId);
  }

  async search(more) {
    const { state } = this.app;
    const query = more ? state.search.query : $("search-input").value.trim();
    if (!query) return;
    const request = { query };
    if (more) {
      const last = state.search.hits[state.search.hits.length - 1];
      request.beforeTsMs = last.tsMs;
      request.beforeMsgId = last.msgId;
    }
    const reply = await this.run(() => this.app.session.call("SearchMessages", request));
    if (!reply) return;
    const hits = reply.messages || [];
    state.search = { query, hits: more ? [...state.search.hits, ...hits] : hits, more: Boolean(reply.more) };
    this.app.render();
  }

  closeSearch() {
    this.app.state.search = null;
    $("search-input").value = "";
    this.app.render();
    $("search-input").focus();
  }

  clicked(ev) {
    const b = ev.target.closest("button[data-act]");
    if (!b) return;
    const act = b.dataset.act;
    if (act === "add" || act === "accept") this.addFriend(b.dataset.user);
    else if (act === "decline") this.decline(b.dataset.user);
    else if (act === "join") this.joinGroup(b.dataset.group);
    else if (act === "open") this.app.chat.open(b.dataset.conv);
    else if (act === "jump") this.app.chat.open(b.dataset.conv, seqOf(b.dataset.seq));
    else if (act === "more") this.search(true);
    else if (act === "join-invite") this.joinInvite(b.dataset.group);
    else if (act === "drop-invite") this.dropInvite(b.dataset.group);
    else if (act === "unblock") this.unblock(b.dataset.user);
    else if (act === "kick") this.kick(b.dataset.user);
    else if (act === "owner") this.handOver(b.dataset.user);
  }
}
