// Read state: the mention rule and a client's per-room counts.
//
// Spec: §11.3 (capability `read-state`). A port of crates/protocol/src/read.rs,
// which the spec names as the reference: server and clients decide "is this
// a mention" and "does this count" by the same rule, so counts this client
// adds to the server's for live messages are the numbers the server would
// give.

import type { Message } from "../gen/confab/v1/messages_pb";
import type { ReadState } from "../gen/confab/v1/read_pb";
import { isUsername } from "./names";

/** Counts saturate here; show such a count as "9999+". */
export const COUNT_CAP = 9999;

/** Only the first this many distinct names of a text count. */
export const MAX_MENTIONS = 50;

const AT = 0x40;

/**
 * Letters, digits, `_` and `-`, upper case included so `@Alice` mentions
 * `alice`. Works on UTF-16 units: every non-ASCII unit is not a name
 * character, exactly as every non-ASCII UTF-8 byte is not one in Rust.
 */
function isNameChar(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x5f ||
    c === 0x2d
  );
}

/**
 * The users a text mentions, in order of first appearance, each once, at
 * most MAX_MENTIONS (§11.3): an `@` at the start or after a character that
 * is not a letter, digit, `_`, `-` or `@`, followed by the longest run of
 * letters, digits, `_` and `-`, which in lower case must be a valid
 * username. So `hi @bob!` and `@Bob, look` mention `bob`; `a@bob.org`,
 * `@@bob` and `@bobby` (for bob) do not.
 */
export function mentions(text: string): string[] {
  const found: string[] = [];
  let at = 0;
  for (;;) {
    const start = text.indexOf("@", at);
    if (start < 0) break;
    at = start + 1;
    if (start > 0) {
      const before = text.charCodeAt(start - 1);
      if (isNameChar(before) || before === AT) continue;
    }
    let end = at;
    while (end < text.length && isNameChar(text.charCodeAt(end))) end++;
    const name = text.slice(at, end).toLowerCase();
    if (!isUsername(name)) continue;
    if (!found.includes(name)) {
      found.push(name);
      if (found.length === MAX_MENTIONS) break;
    }
    at = end;
  }
  return found;
}

/** What one message adds to a reader's counts. */
export interface Counted {
  /** Someone else sent it. */
  unread: boolean;
  /** It mentions the reader, and someone else sent it. */
  mention: boolean;
}

/** How a message by `sender` with `text` counts for the user `me`. */
export function countsFor(sender: string, text: string, me: string): Counted {
  if (sender === me) return { unread: false, mention: false };
  return { unread: true, mention: mentions(text).includes(me) };
}

/** The marker a MarkRead leaves: never back, never past the head. */
export function markerAfter(current: bigint, requested: bigint, headSeq: bigint): bigint {
  const capped = requested < headSeq ? requested : headSeq;
  return current > capped ? current : capped;
}

/** A room's read state at one moment, as a front end shows it. */
export interface ReadCounts {
  /** The marker: every message up to it is read. */
  readSeq: bigint;
  /** Unread messages, at most COUNT_CAP. */
  unread: number;
  /** Unread mentions of the user, at most COUNT_CAP. */
  mentions: number;
}

interface Later {
  seq: bigint;
  counted: Counted;
}

/** The fields of a ReadState this needs, so callers may pass plain objects. */
export type ReadStateLike = Pick<ReadState, "readSeq" | "unreadCount" | "mentionCount" | "countedSeq">;

/**
 * A client's view of its read state in one room: the server's last
 * ReadState plus the messages received since it was counted. A ReadState
 * can be older than messages already received (counted before they were
 * stored), so what each later message added is remembered, at most
 * COUNT_CAP of them: past that the count is at the cap either way.
 */
export class RoomRead {
  private _readSeq = 0n;
  private baseUnread = 0;
  private baseMentions = 0;
  /** The seq the server's counts were taken at. */
  private baseSeq = 0n;
  /** Messages above baseSeq, ascending. */
  private later: Later[] = [];

  /** From a server ReadState (Welcome, a MarkRead reply or a push). */
  static fromWire(state: ReadStateLike): RoomRead {
    const read = new RoomRead();
    read.take(state);
    return read;
  }

  private take(state: ReadStateLike): void {
    this._readSeq = state.readSeq;
    this.baseUnread = Math.min(state.unreadCount, COUNT_CAP);
    this.baseMentions = Math.min(state.mentionCount, COUNT_CAP);
    this.baseSeq = state.countedSeq > state.readSeq ? state.countedSeq : state.readSeq;
  }

  /** The marker. */
  readSeq(): bigint {
    return this._readSeq;
  }

  /** Messages above the marker not sent by the user, at most COUNT_CAP. */
  unreadCount(): number {
    return this.total(this.baseUnread, (c) => c.unread);
  }

  /** Unread messages that mention the user, at most COUNT_CAP. */
  mentionCount(): number {
    return this.total(this.baseMentions, (c) => c.mention);
  }

  private total(base: number, counts: (c: Counted) => boolean): number {
    let later = 0;
    for (const l of this.later) if (l.seq > this._readSeq && counts(l.counted)) later++;
    return Math.min(base + Math.min(later, COUNT_CAP), COUNT_CAP);
  }

  /** The marker and both counts. */
  counts(): ReadCounts {
    return { readSeq: this._readSeq, unread: this.unreadCount(), mentions: this.mentionCount() };
  }

  /** The highest seq the counts include. */
  countedSeq(): bigint {
    const last = this.later[this.later.length - 1];
    return last === undefined ? this.baseSeq : last.seq;
  }

  /**
   * Counts a message received live, replayed or from history; one at or
   * below countedSeq is in the counts already. Returns whether the counts changed.
   */
  handleMessage(message: Pick<Message, "seq" | "sender" | "text"> & Partial<Pick<Message, "relation">>, me: string): boolean {
    if (message.seq <= this.countedSeq()) return false;
    // edits, deletions and reactions are not counted; replies are.
    const kind = message.relation?.kind.case;
    const counted =
      kind === undefined || kind === "reply" ? countsFor(message.sender, message.text, me) : { unread: false, mention: false };
    if (this.later.length === COUNT_CAP) this.later.shift();
    this.later.push({ seq: message.seq, counted });
    return message.seq > this._readSeq && (counted.unread || counted.mention);
  }

  /**
   * Takes a ReadState from the server. One whose marker is behind ours is
   * stale (markers never move back, R-11.3.3) and ignored; returns whether
   * it was taken.
   */
  handleState(state: ReadStateLike): boolean {
    if (state.readSeq < this._readSeq) return false;
    const later = this.later;
    this.take(state);
    this.later = later.filter((l) => l.seq > this.baseSeq);
    return true;
  }

  /**
   * The user read up to `seq` here, before the server confirms it: the
   * counts drop to what this room can count alone. Above the server's last
   * counts that is exact; below them the server's reply will say.
   */
  readUpTo(seq: bigint): void {
    if (seq <= this._readSeq) return;
    this._readSeq = seq;
    if (seq >= this.baseSeq) {
      this.baseUnread = 0;
      this.baseMentions = 0;
    }
  }
}
