// The user's session over a Connection: Register/Login/Resume/Logout, the token kept in
// localStorage (a reload resumes without a password; logging out forgets it), and after every
// (re)connect a Resume with that token. Messages reach `onMessage` once each, in seq order per
// conversation, without gaps: a pushed message beyond the last seq seen first fetches what is
// missing with History, and every Sync fetches what lies above it. What arrived is
// acknowledged with one Delivered per conversation. Sends go through an Outbox, resent after
// a reconnect. Peer sockets: those of its Connection.

import { Connection, LOST } from "./connection.js";
import { Outbox, newClientMsgId } from "./outbox.js";

const TOKEN_KEY = "soim.token";
const DEVICE = "web";
const FILL_PAGE = 100;
const FIRST_SIGHT = 100; // a conversation seen for the first time: at most this many unread
// to the gateway a redirect names (its `web` URL), else to the next of /gateways
const MOVE_ON = new Set(["NOTICE_GOING_AWAY", "NOTICE_REDIRECT"]);
const RESUME_AGAIN_MS = 2000; // after a Resume refused for a passing reason (UNAVAILABLE, ...)

export const seqOf = (v) => Number(v || 0);

export class Session {
  /** handlers: onMessage(msg), onPush(push) for the other pushes, onLink(up, url),
   * onLogin(reply, resumed), onLogout(reason), onAck(item, ack), onFail(item, err). */
  constructor(handlers) {
    this.h = handlers;
    this.user = null;
    this.owner = ""; // whose conversations `last` and `delivered` follow
    this.last = new Map(); // conv id -> last seq passed on
    this.delivered = new Map(); // conv id -> last Delivered sent
    this.chains = new Map(); // conv id -> promise: one fill at a time per conversation
    this.conn = new Connection({
      onPush: (push) => this.push(push),
      onUp: (url) => this.linkUp(url),
      onDown: () => this.linkDown(),
      wanted: () => Boolean(this.token),
    });
    this.outbox = new Outbox({
      call: (m, b) => this.conn.call(m, b),
      ready: () => this.user !== null && this.conn.up,
      onAck: (item, ack) => this.h.onAck(item, ack),
      onFail: (item, err) => this.h.onFail(item, err),
    });
  }

  /** Connect and resume with the kept token, if there is one; else show the login form (the
   * link connects when it is sent). */
  start() {
    if (!this.token) this.h.onLogout("");
    return this.conn.start();
  }

  get token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  }

  call(method, body = {}) {
    return this.conn.call(method, body);
  }

  // ---- logging in
  async register(account, password, nickname) {
    await this.conn.ready();
    return this.loggedIn(
      await this.call("Register", { account, password, nickname, device: DEVICE }),
      false,
    );
  }

  async login(account, password) {
    await this.conn.ready();
    return this.loggedIn(await this.call("Login", { account, password, device: DEVICE }), false);
  }

  async logout() {
    localStorage.removeItem(TOKEN_KEY);
    this.user = null;
    this.outbox.clear();
    this.last.clear();
    this.delivered.clear();
    try {
      await this.call("Logout");
    } catch {
      // the session ends with the connection anyway
    }
    this.h.onLogout("");
  }

  loggedIn(reply, resumed) {
    if (this.owner !== reply.userId) {
      this.last.clear(); // what another user had seen
      this.delivered.clear();
      this.owner = reply.userId;
    }
    this.user = reply;
    if (reply.token) localStorage.setItem(TOKEN_KEY, reply.token);
    this.h.onLogin(reply, resumed);
    this.outbox.pump();
    return reply;
  }

  async linkUp(url) {
    this.h.onLink(true, url);
    const token = this.token;
    if (!token) return; // a Login or Register is on its way
    try {
      this.loggedIn(await this.call("Resume", { token, device: DEVICE }), true);
    } catch (err) {
      if (err.code === LOST) return; // the next connection tries again
      if (err.code === "TOKEN_INVALID" || err.code === "ACCOUNT_DISABLED") {
        localStorage.removeItem(TOKEN_KEY);
        this.user = null;
        this.h.onLogout(err.code);
      } else {
        setTimeout(() => this.conn.url === url && this.conn.up && this.linkUp(url), RESUME_AGAIN_MS);
      }
    }
  }

  linkDown() {
    this.user = null; // the session ended with its socket; Resume brings it back
    this.h.onLink(false, "");
  }

  // ---- sending
  /** Queue a message; returns the outbox item (its request carries the clientMsgId). */
  send(convId, to, body, kind = "", refSeq = 0) {
    const request = { clientMsgId: newClientMsgId(), body, ...to };
    if (kind) request.kind = kind;
    if (refSeq) request.refSeq = String(refSeq);
    const item = { convId, request };
    this.outbox.add(item);
    return item;
  }

  // ---- every message once, in order
  push(push) {
    if (push.message) {
      const msg = push.message;
      this.serial(msg.convId, () => this.pushed(msg));
    } else {
      const notice = push.notice;
      if (notice && MOVE_ON.has(notice.kind)) {
        const web = notice.kind === "NOTICE_REDIRECT" && notice.redirect && notice.redirect.web;
        if (web) this.conn.moveTo(web);
        else this.conn.moveOn();
      }
      this.h.onPush(push);
    }
  }

  async pushed(msg) {
    const seq = seqOf(msg.seq);
    let known = this.last.has(msg.convId) ? this.last.get(msg.convId) : seq - 1;
    if (seq <= known) return;
    if (seq > known + 1) known = await this.fill(msg.convId, known, seq - 1);
    if (seq === known + 1) this.pass(msg);
  }

  /** Sync: the state of every conversation; fetch what is above the last seq seen. */
  async sync() {
    const reply = await this.call("Sync");
    const conversations = reply.conversations || [];
    for (const c of conversations) {
      const lastSeq = seqOf(c.lastSeq);
      if (!this.last.has(c.convId)) {
        const start = Math.max(seqOf(c.readSeq), seqOf(c.floorSeq), lastSeq - FIRST_SIGHT);
        this.last.set(c.convId, start);
        this.delivered.set(c.convId, seqOf(c.deliveredSeq));
      }
      this.serial(c.convId, async () => {
        const known = this.last.get(c.convId);
        if (lastSeq > known) await this.fill(c.convId, known, lastSeq);
        this.acknowledge(c.convId);
      });
    }
    return conversations;
  }

  serial(convId, job) {
    const next = (this.chains.get(convId) || Promise.resolve()).then(job).catch(() => {});
    this.chains.set(convId, next);
    return next;
  }

  async fill(convId, after, upto) {
    let known = after;
    while (known < upto) {
      const page = await this.call("History", {
        convId,
        afterSeq: String(known),
        limit: Math.min(FILL_PAGE, upto - known),
      });
      const fresh = (page.messages || []).filter((m) => seqOf(m.seq) > known);
      if (!fresh.length) break;
      for (const m of fresh) {
        if (seqOf(m.seq) !== known + 1) return known; // a hole: a later sync retries
        this.pass(m);
        known = seqOf(m.seq);
      }
    }
    return known;
  }

  pass(msg) {
    this.last.set(msg.convId, seqOf(msg.seq));
    this.h.onMessage(msg);
    // my own message needs no Delivered: the server moved my cursors to it when it stored it
    if (msg.sender !== this.owner) this.acknowledge(msg.convId);
  }

  /** One Delivered per conversation for what has arrived (after the current burst). */
  acknowledge(convId) {
    const seq = this.last.get(convId) || 0;
    if (seq <= (this.delivered.get(convId) || 0)) return;
    this.delivered.set(convId, seq);
    queueMicrotask(() => {
      if (this.delivered.get(convId) !== seq) return; // a later one goes instead
      this.call("Delivered", { convId, seq: String(seq) }).catch(() => {
        this.delivered.set(convId, 0); // try again at the next message or sync
      });
    });
  }
}
