// Friends, groups and message search, from the sidebar: find users by account prefix and ask
// them to be friends (AddFriend; accepting a request is AddFriend back, declining is
// RemoveFriend with `decline`), find, join and create groups, and search my messages
// (SearchMessages, a page at a time; a result opens its conversation at that message). Talks
// to the gateway only through the Session.

import { seqOf } from "./session.js";

const $ = (id) => document.getElementById(id);

export class People {
  /** app: {state, session, views, render(), toast(text, error), refresh(), chat} */
  constructor(app) {
    this.app = app;
    this.form("friend-form", () => this.findUsers());
    this.form("group-form", () => this.findGroups());
    this.form("search-form", () => this.search(false));
    $("group-create").addEventListener("click", () => this.createGroup());
    $("search-close").addEventListener("click", () => this.closeSearch());
    for (const id of ["user-results", "group-results", "request-list", "search-list"]) {
      $(id).addEventListener("click", (ev) => this.clicked(ev));
    }
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
  }
}
