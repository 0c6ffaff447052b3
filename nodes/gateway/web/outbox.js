// Messages the store has not acknowledged yet, sent one at a time so they are stored in the
// order typed. A send that fails because the link or the session is gone stays at the head of
// the queue and is sent again, with the same clientMsgId, when the session is back (the gateway
// stores a clientMsgId once and acks a retry with the same seq); a passing refusal
// (UNAVAILABLE, TIMEOUT, RATE_LIMITED, no answer in time) is tried again a second later; any
// other refusal fails that one message and the next goes. No sockets of its own: it sends
// through `call`.

import { LOST } from "./connection.js";

const WAIT_FOR_SESSION = new Set([LOST, "UNAUTHENTICATED"]); // sent again after the Resume
const LATER = new Set(["UNAVAILABLE", "TIMEOUT", "RATE_LIMITED", "DEADLINE_EXCEEDED"]);
const RETRY_LATER_MS = 1000;

/** A clientMsgId: 128 random bits in hex (crypto.randomUUID needs a secure context). */
export function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  /** call(method, body) sends; ready() says whether a session is up; onAck(item, ack) and
   * onFail(item, error) report each message's end. */
  constructor({ call, ready, onAck, onFail }) {
    this.call = call;
    this.ready = ready;
    this.onAck = onAck;
    this.onFail = onFail;
    this.queue = [];
    this.busy = false;
    this.timer = null;
  }

  /** Queue one SendRequest (its clientMsgId set); `item` is {request, convId, ...}. */
  add(item) {
    this.queue.push(item);
    this.pump();
  }

  clear() {
    this.queue = [];
  }

  async pump() {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length && this.ready()) {
        const item = this.queue[0];
        let ack;
        try {
          ack = await this.call("Send", item.request);
        } catch (err) {
          if (WAIT_FOR_SESSION.has(err.code)) return; // the next session pumps again
          if (LATER.has(err.code)) {
            this.later();
            return;
          }
          this.queue.shift();
          this.onFail(item, err);
          continue;
        }
        this.queue.shift();
        this.onAck(item, ack);
      }
    } finally {
      this.busy = false;
    }
  }

  later() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.pump(), RETRY_LATER_MS);
  }
}
