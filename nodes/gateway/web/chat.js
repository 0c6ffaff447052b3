// The open conversation: opening one (its newest page first), paging older messages when the
// list is scrolled to the top (and newer ones after a search jumped mid-way), marking what is
// shown as read, group read counts (fetched, not pushed: refreshed while a group is open),
// telling the others I am typing (at most every TYPING_EVERY_MS), and the composer — Enter
// sends, Shift+Enter breaks the line, ArrowUp in an empty composer edits my last message,
// Escape cancels an edit. Talks to the gateway only through the Session.

import { seqOf } from "./session.js";

const PAGE = 50;
const COUNTS_EVERY_MS = 2000;
const TYPING_EVERY_MS = 3000;
const NEAR_EDGE_PX = 40;
const $ = (id) => document.getElementById(id);

export class Chat {
  /** app: {state, session, render(), toast(text, error), refresh()} */
  constructor(app) {
    this.app = app;
    this.typingNext = 0;
    this.keepFromBottom = null; // set while an older page is prepended
    this.revealing = null; // what drawn() shows next: "bottom", a seq, or nothing
    this.focusing = false; // drawn() focuses the message box
    setInterval(() => this.counts(), COUNTS_EVERY_MS);
    const list = $("messages");
    list.addEventListener("scroll", () => this.scrolled());
    list.addEventListener("click", (ev) => this.clicked(ev));
    const input = $("compose-input");
    input.addEventListener("keydown", (ev) => this.key(ev));
    input.addEventListener("input", () => this.typed());
    $("composer").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    $("edit-cancel").addEventListener("click", () => this.cancelEdit());
    document.addEventListener("visibilitychange", () => this.seen(this.app.state.open));
  }

  get entry() {
    return this.app.state.entries.get(this.app.state.open);
  }

  open(convId, seq = 0) {
    const { state } = this.app;
    if (state.open !== convId) {
      state.editing = state.found = null;
      state.membersOpen = false; // each conversation opens without its member panel
    }
    state.open = convId;
    const t = state.thread(convId);
    if (state.entries.get(convId)?.ended) t.fetched = true; // the server shows it no more
    if (seq && !t.messages.has(seq)) this.jump(convId, seq);
    else if (!t.fetched) this.newest(convId);
    this.seen(convId);
    this.counts();
    this.app.people.members();
    this.focusing = !seq; // the message box, once the pane is drawn
    this.reveal(seq);
  }

  close() {
    this.app.state.open = "";
    this.app.state.editing = null;
    this.app.render();
  }

  /** After the next drawing, show the bottom of the list, or message `seq` (a search hit). */
  reveal(seq = 0) {
    this.revealing = seq || "bottom";
    if (seq) this.app.state.found = { convId: this.app.state.open, seq };
    this.app.render();
  }

  /** Called after each drawing. */
  drawn() {
    const list = $("messages");
    if (this.keepFromBottom !== null && !this.app.state.thread(this.app.state.open).loading) {
      list.scrollTop = list.scrollHeight - this.keepFromBottom;
      this.keepFromBottom = null;
    }
    if (this.focusing && !$("pane").hidden) {
      this.focusing = false;
      $("compose-input").focus();
    }
    if (this.revealing === "bottom") list.scrollTop = list.scrollHeight;
    else if (this.revealing) {
      const row = list.querySelector(`li[data-seq="${this.revealing}"]`);
      if (!row) return; // not loaded yet
      row.scrollIntoView({ block: "center" });
      row.focus({ preventScroll: true });
    }
    this.revealing = null;
  }

  async newest(convId) {
    const t = this.app.state.thread(convId);
    t.fetched = true;
    try {
      const page = await this.app.session.call("History", { convId, limit: PAGE });
      this.loaded(convId, page, false);
    } catch (err) {
      t.fetched = false; // again at the next open
      this.app.toast(err.message, true);
    }
    if (this.app.state.open === convId) this.reveal();
  }

  async jump(convId, seq) {
    const t = this.app.state.thread(convId);
    t.fetched = true;
    t.loading = true;
    try {
      const page = await this.app.session.call("History", {
        convId,
        afterSeq: String(Math.max(0, seq - PAGE / 2)),
        limit: PAGE,
      });
      t.reset();
      t.newerMissing = Boolean(page.more);
      this.loaded(convId, page, false);
    } catch (err) {
      this.app.toast(err.message, true);
    } finally {
      t.loading = false;
    }
    this.reveal(seq);
  }

  loaded(convId, page, older) {
    const { state } = this.app;
    const t = state.thread(convId);
    const messages = page.messages || [];
    for (const m of messages) state.addMessage(m);
    const e = state.entries.get(convId);
    const floor = e ? e.floorSeq : 0;
    if (!messages.length || t.oldest <= floor + 1 || (older && !page.more)) t.complete = true;
    this.seen(convId);
    this.app.render();
  }

  scrolled() {
    const list = $("messages");
    const e = this.entry;
    if (!e) return;
    const t = this.app.state.thread(e.convId);
    if (list.scrollTop < NEAR_EDGE_PX && !t.complete && !t.loading && t.seqs.length) this.older(e.convId);
    else if (t.newerMissing && !t.loading) {
      if (list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_EDGE_PX) this.newer(e.convId);
    }
  }

  async older(convId) {
    const t = this.app.state.thread(convId);
    const list = $("messages");
    t.loading = true;
    this.keepFromBottom = list.scrollHeight - list.scrollTop;
    try {
      const page = await this.app.session.call("History", {
        convId,
        beforeSeq: String(t.oldest),
        limit: PAGE,
      });
      t.loading = false;
      this.loaded(convId, page, true);
    } catch (err) {
      this.app.toast(err.message, true);
    } finally {
      t.loading = false;
    }
    this.app.render(); // drawn() keeps the messages that were on screen where they were
  }

  async newer(convId) {
    const t = this.app.state.thread(convId);
    t.loading = true;
    try {
      const page = await this.app.session.call("History", {
        convId,
        afterSeq: String(t.newest),
        limit: PAGE,
      });
      t.newerMissing = Boolean(page.more);
      for (const m of page.messages || []) this.app.state.addMessage(m);
    } catch (err) {
      this.app.toast(err.message, true);
    } finally {
      t.loading = false;
    }
    this.seen(convId);
    this.app.render();
  }

  /** What the open conversation shows is read (while the page is visible). */
  seen(convId) {
    const { state, session } = this.app;
    const e = state.entries.get(convId);
    if (!e || convId !== state.open || document.visibilityState === "hidden" || !state.me) return;
    const newest = state.thread(convId).newest;
    if (newest > e.readSeq) {
      const before = e.readSeq;
      e.readSeq = newest;
      session.call("Read", { convId, seq: String(newest) }).catch(() => {
        e.readSeq = Math.min(e.readSeq, before); // again after the next message or sync
      });
      this.app.render();
    }
  }

  /** Group read counts of my newest messages (at most 100 seqs). */
  async counts() {
    const { state, session } = this.app;
    const e = this.entry;
    if (!e || !e.group || !state.me || !state.link.up) return;
    const mine = state.mySeqs(e.convId);
    if (!mine.length) return;
    const high = mine[mine.length - 1];
    const low = Math.max(mine[0], high - 99);
    try {
      state.setCounts(
        await session.call("GroupReadCounts", {
          convId: e.convId,
          fromSeq: String(low),
          toSeq: String(high),
        }),
      );
      this.app.render();
    } catch {
      // refreshed again shortly
    }
  }

  typed() {
    const e = this.entry;
    const now = Date.now();
    if (!e || !$("compose-input").value || now < this.typingNext || this.app.state.editing) return;
    this.typingNext = now + TYPING_EVERY_MS;
    this.app.session.call("Typing", { convId: e.convId }).catch(() => {});
  }

  key(ev) {
    const input = $("compose-input");
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      this.submit();
    } else if (ev.key === "ArrowUp" && !input.value) {
      const e = this.entry;
      const mine = e ? this.app.state.mySeqs(e.convId) : [];
      const t = e && this.app.state.thread(e.convId);
      const last = mine.reverse().find((s) => t.amends.get(s)?.kind !== "MESSAGE_KIND_RECALL");
      if (last) {
        ev.preventDefault();
        this.edit(last);
      }
    } else if (ev.key === "Escape" && this.app.state.editing) {
      ev.preventDefault();
      ev.stopPropagation();
      this.cancelEdit();
    }
  }

  submit() {
    const { state, session } = this.app;
    const e = this.entry;
    const input = $("compose-input");
    const body = input.value.trim();
    if (!e || !body) return;
    if (body.length > 4000) {
      this.app.toast("a message has at most 4,000 characters", true);
      return;
    }
    const to = e.group ? { toGroup: e.peerId } : { toUser: e.peerId };
    const editing = state.editing;
    const item = editing
      ? session.send(e.convId, to, body, "MESSAGE_KIND_EDIT", editing.seq)
      : session.send(e.convId, to, body);
    const shown = editing ? `(edit of #${editing.seq}) ${body}` : body;
    state.addPending(e.convId, item.request.clientMsgId, shown);
    state.editing = null;
    input.value = "";
    this.typingNext = 0;
    this.reveal();
  }

  edit(seq) {
    const { state } = this.app;
    const e = this.entry;
    if (!e) return;
    const t = state.thread(e.convId);
    const msg = t.messages.get(seq);
    if (!msg) return;
    state.editing = { convId: e.convId, seq };
    const input = $("compose-input");
    input.value = t.amends.get(seq)?.body || msg.body;
    input.focus();
    this.app.render();
  }

  cancelEdit() {
    this.app.state.editing = null;
    $("compose-input").value = "";
    this.app.render();
    $("compose-input").focus();
  }

  recall(seq) {
    const { state, session } = this.app;
    const e = this.entry;
    if (!e) return;
    const to = e.group ? { toGroup: e.peerId } : { toUser: e.peerId };
    const item = session.send(e.convId, to, "", "MESSAGE_KIND_RECALL", seq);
    state.addPending(e.convId, item.request.clientMsgId, `(recall of #${seq})`);
    this.app.render();
  }

  clicked(ev) {
    const button = ev.target.closest("button[data-act]");
    if (!button) return;
    const seq = seqOf(button.dataset.seq);
    if (button.dataset.act === "edit") this.edit(seq);
    else if (button.dataset.act === "recall") this.recall(seq);
    else if (button.dataset.act === "dismiss") {
      this.app.state.dropPending(this.app.state.open, button.dataset.pending);
      this.app.render();
    }
  }
}
