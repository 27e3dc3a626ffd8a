// Per-room position tracking: in-order, exactly-once delivery of messages.
//
// Spec: §8.2 (gapless seq), §10 (resume) and §14.3 (dedupe and gap
// detection). Port of crates/protocol/src/session/rooms.rs. A room's
// lastSeq is the highest seq shown; a message above lastSeq + 1 is held
// until the gap below it is filled from history, one at or below lastSeq
// is a duplicate.

import type { Message } from "../gen/confab/v1/messages_pb";

/** What became of an incoming message. */
export type Accepted =
  /** Already shown or already held: dropped. */
  | { kind: "duplicate" }
  /** Shown, possibly with held successors. */
  | { kind: "delivered" }
  /** Held behind a gap; `startFill`: no history request is in flight yet. */
  | { kind: "held"; startFill: boolean };

/** What to do after a history page filled part of a gap. */
export type FillNext =
  /** Nothing is missing any more. */
  | { kind: "done" }
  /** Ask for the page after this seq. */
  | { kind: "more"; afterSeq: bigint }
  /** The server has no more history yet messages are missing: the range
   * was skipped so delivery goes on (a broken server; reported). */
  | { kind: "skipped"; from: bigint; to: bigint };

/** Where a room stands. */
export class RoomTrack {
  lastSeq: bigint;
  epoch: string;
  /** Messages above a gap, by seq. */
  private pending = new Map<bigint, Message>();
  /** Request id of the history request filling the gap, if one is in flight. */
  gapFill: number | undefined = undefined;
  /** A seq known to exist (a resume's head): filling goes on until it is shown. */
  fillUntil = 0n;

  constructor(lastSeq = 0n, epoch = "") {
    this.lastSeq = lastSeq;
    this.epoch = epoch;
  }

  /** Feeds one message; deliverable ones are appended to `out` in seq order. */
  accept(msg: Message, out: Message[]): Accepted {
    if (msg.seq <= this.lastSeq || this.pending.has(msg.seq)) return { kind: "duplicate" };
    if (msg.seq === this.lastSeq + 1n) {
      this.lastSeq = msg.seq;
      out.push(msg);
      this.drain(out);
      return { kind: "delivered" };
    }
    this.pending.set(msg.seq, msg);
    return { kind: "held", startFill: this.gapFill === undefined };
  }

  /** Seqs are gapless, so the next deliverable held message is always lastSeq + 1. */
  private drain(out: Message[]): void {
    for (;;) {
      const next = this.pending.get(this.lastSeq + 1n);
      if (next === undefined) break;
      this.pending.delete(next.seq);
      this.lastSeq = next.seq;
      out.push(next);
    }
  }

  private firstPending(): bigint | undefined {
    let first: bigint | undefined;
    for (const seq of this.pending.keys()) if (first === undefined || seq < first) first = seq;
    return first;
  }

  /** Feeds a history page that answered this room's gap fill. */
  fill(page: Message[], hasMore: boolean, out: Message[]): FillNext {
    this.gapFill = undefined;
    for (const msg of page) this.accept(msg, out);
    const first = this.firstPending();
    const missing = first !== undefined || this.lastSeq < this.fillUntil;
    if (!missing) return { kind: "done" };
    if (hasMore) return { kind: "more", afterSeq: this.lastSeq };
    if (first === undefined) return { kind: "done" };
    // The server says there is no more, yet a gap remains below a held
    // message: skip it so delivery is not stuck forever.
    const skipped: FillNext = { kind: "skipped", from: this.lastSeq + 1n, to: first - 1n };
    this.lastSeq = first - 1n;
    this.drain(out);
    return skipped;
  }

  /** Forgets held messages and any fill in flight (new epoch). */
  resetTo(lastSeq: bigint, epoch: string): void {
    this.lastSeq = lastSeq;
    this.epoch = epoch;
    this.pending.clear();
    this.gapFill = undefined;
    this.fillUntil = 0n;
  }
}
