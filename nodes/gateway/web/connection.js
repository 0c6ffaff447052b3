// The link to a gateway: one WebSocket speaking the soim.json subprotocol (docs/websocket.md).
// Requests are matched to replies by id; pushes go to a callback. When the socket dies (or a
// ping goes unanswered) every pending call fails with LOST, and the link reconnects with
// backoff, moving on to the next gateway of the list GET /gateways gave (this page's gateway
// first), or to the one a redirect names. Peer sockets: the gateways' /ws endpoints and this
// page's /gateways.

export const LOST = "CONNECTION_LOST";
const CALL_TIMEOUT_MS = 15000;
const PING_EVERY_MS = 15000;
const PING_TIMEOUT_MS = 8000;
const BACKOFF_MS = [200, 500, 1000, 2000, 4000];

/** A request the gateway refused (code: a common.proto ErrorCode name), or LOST. */
export class RpcError extends Error {
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
    this.detail = detail;
  }
}

function pageSocketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class Connection {
  /** onPush(push), onUp(url) after each (re)connect, onDown() when a live socket is lost;
   * wanted() says whether to reconnect (a gateway closes a connection without a session after
   * a few seconds: then the link waits for `ready()`). */
  constructor({ onPush, onUp, onDown, wanted }) {
    this.onPush = onPush;
    this.onUp = onUp;
    this.onDown = onDown;
    this.wanted = wanted;
    this.upWaiters = [];
    this.urls = [pageSocketUrl()];
    this.index = 0;
    this.url = "";
    this.ws = null;
    this.up = false;
    this.retrying = false;
    this.stopped = false;
    this.failures = 0;
    this.nextId = 1;
    this.waiting = new Map();
    this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  async start() {
    await this.refreshGateways();
    if (this.wanted()) this.open();
  }

  /** Resolves once connected (connecting now if the link is idle); LOST after `timeoutMs`. */
  ready(timeoutMs = CALL_TIMEOUT_MS) {
    if (this.up) return Promise.resolve();
    if (!this.ws && !this.retrying) this.open();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.upWaiters.push(waiter);
      setTimeout(() => {
        this.upWaiters = this.upWaiters.filter((w) => w !== waiter);
        reject(new RpcError(LOST, "no gateway answers"));
      }, timeoutMs);
    });
  }

  /** The cluster's gateways, from this page's gateway; kept as they were if it is gone. */
  async refreshGateways() {
    try {
      const reply = await fetch("/gateways", { cache: "no-store" });
      const list = reply.ok ? (await reply.json()).gateways : null;
      if (Array.isArray(list) && list.length) {
        const keep = this.urls[this.index % this.urls.length];
        this.urls = [...new Set(list.filter((u) => typeof u === "string"))];
        this.index = Math.max(0, this.urls.indexOf(keep));
      }
    } catch {
      // the page's gateway is down: fail over within the list already known
    }
  }

  open() {
    if (this.stopped) return;
    const url = this.urls[this.index % this.urls.length];
    let ws;
    try {
      ws = new WebSocket(url, "soim.json");
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.failures = 0;
      this.up = true;
      this.url = url;
      for (const waiter of this.upWaiters.splice(0)) waiter.resolve();
      this.onUp(url);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.receive(event.data);
    };
    ws.onclose = () => this.lost(ws);
  }

  /** Forget `ws` (dead, or given up on) and reconnect. */
  lost(ws) {
    if (this.ws !== ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close();
    } catch {
      // already closed
    }
    this.ws = null;
    const wasUp = this.up;
    this.up = false;
    for (const [, waiter] of this.waiting) {
      clearTimeout(waiter.timer);
      waiter.reject(new RpcError(LOST, "connection lost"));
    }
    this.waiting.clear();
    if (wasUp) this.onDown();
    if (!wasUp) this.index += 1; // this gateway did not answer: try the next one
    if (this.wanted() || this.upWaiters.length) this.retry();
  }

  retry() {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    this.retrying = true;
    setTimeout(async () => {
      if (this.index % this.urls.length === 0) await this.refreshGateways();
      this.retrying = false;
      this.open();
    }, delay);
  }

  /** Leave this gateway for another one (it is stopping). */
  moveOn() {
    if (this.ws) {
      this.index += 1;
      this.lost(this.ws);
    }
  }

  /** Leave this gateway for the one at `url` (ws:// or wss://; added to the list if new):
   * the link reconnects there, and the session resumes with its token. */
  moveTo(url) {
    if (!/^wss?:\/\//.test(url)) {
      this.moveOn();
      return;
    }
    if (!this.urls.includes(url)) this.urls.push(url);
    if (this.ws) {
      this.index = this.urls.indexOf(url);
      this.lost(this.ws);
    }
  }

  stop() {
    this.stopped = true;
    clearInterval(this.pinger);
    if (this.ws) this.lost(this.ws);
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.push) {
      this.onPush(frame.push);
      return;
    }
    const waiter = this.waiting.get(frame.id);
    if (!waiter) return;
    this.waiting.delete(frame.id);
    clearTimeout(waiter.timer);
    if (frame.error) waiter.reject(new RpcError(frame.error.code, frame.error.detail || ""));
    else waiter.resolve(frame.body || {});
  }

  /** One request: resolves with the reply body, rejects with an RpcError. */
  call(method, body = {}, timeoutMs = CALL_TIMEOUT_MS) {
    if (!this.up || !this.ws) return Promise.reject(new RpcError(LOST, "not connected"));
    const id = this.nextId++;
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new RpcError("DEADLINE_EXCEEDED", `${method} got no answer`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ id, method, body }));
    });
  }

  /** A silent gateway (half-open TCP) is given up on. */
  async ping() {
    if (!this.up) return;
    const ws = this.ws;
    try {
      await this.call("Ping", { clientTimeMs: String(Date.now()) }, PING_TIMEOUT_MS);
    } catch (err) {
      if (err.code === "DEADLINE_EXCEEDED") this.lost(ws);
    }
  }
}
