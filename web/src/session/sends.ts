// Own sends as a front end shows them: pending, then delivered, once.
//
// Spec: §8.4 (a sender's own connections get the message pushed, and the
// push may come before the SendAck) and §14.1 (a send is kept until
// acknowledged). Port of crates/protocol/src/session/sends.rs. The outbox
// decides what goes on the wire; this decides what the user is told, so no
// front end keeps its own echo bookkeeping:
//
// - a send that waits longer than `pendingAfter` (or is queued offline, or
//   was restored from storage) is reported pending, once;
// - its first sign of storage, the echo or the SendAck, reports it
//   delivered, once; the other is recognised as ours and says nothing new.

/** How many delivered ids are remembered, so the echo or ack that comes
 * second is still recognised. Both normally arrive within one round trip. */
export const DELIVERED_MEMORY = 1024;

interface Waiting {
  clientMsgId: string;
  /** When it is reported pending, unless delivered first; undefined once reported. */
  pendingAt: number | undefined;
}

/** What the session told about its own sends. */
export class OwnSends {
  private waiting: Waiting[] = [];
  /** Oldest first, at most DELIVERED_MEMORY; the set answers lookups. */
  private delivered: string[] = [];
  private deliveredSet = new Set<string>();

  /**
   * A send was queued; it is reported pending at `pendingAt`, or at once
   * when that is undefined (not online, or restored from an earlier run).
   * Returns whether it must be reported pending now.
   */
  queued(clientMsgId: string, pendingAt: number | undefined): boolean {
    if (this.isKnown(clientMsgId)) return false;
    this.waiting.push({ clientMsgId, pendingAt });
    return pendingAt === undefined;
  }

  /** Sends whose wait ended by `now`: report them pending. */
  due(now: number): string[] {
    const due: string[] = [];
    for (const send of this.waiting) {
      if (send.pendingAt !== undefined && send.pendingAt <= now) {
        send.pendingAt = undefined;
        due.push(send.clientMsgId);
      }
    }
    return due;
  }

  /** The next instant `due` has something. */
  nextDue(): number | undefined {
    let next: number | undefined;
    for (const s of this.waiting) {
      if (s.pendingAt !== undefined && (next === undefined || s.pendingAt < next)) next = s.pendingAt;
    }
    return next;
  }

  /**
   * A sign that the send is stored (its echo or its ack): `wasPending` the
   * first time for a send of ours; undefined when delivered already or not ours.
   */
  stored(clientMsgId: string): boolean | undefined {
    const pos = this.waiting.findIndex((s) => s.clientMsgId === clientMsgId);
    if (pos < 0) return undefined;
    const [send] = this.waiting.splice(pos, 1);
    this.remember(clientMsgId);
    return send?.pendingAt === undefined;
  }

  /** The server refused the send for good: forget it. */
  refused(clientMsgId: string): void {
    this.waiting = this.waiting.filter((s) => s.clientMsgId !== clientMsgId);
  }

  /** Whether `clientMsgId` is a send of this session, waiting or delivered. */
  isKnown(clientMsgId: string): boolean {
    return (
      clientMsgId !== "" &&
      (this.waiting.some((s) => s.clientMsgId === clientMsgId) || this.deliveredSet.has(clientMsgId))
    );
  }

  /** How many delivered ids are remembered (for tests of the bound). */
  deliveredRemembered(): number {
    return this.delivered.length;
  }

  private remember(clientMsgId: string): void {
    if (this.deliveredSet.has(clientMsgId)) return;
    if (this.delivered.length === DELIVERED_MEMORY) {
      const oldest = this.delivered.shift();
      if (oldest !== undefined) this.deliveredSet.delete(oldest);
    }
    this.delivered.push(clientMsgId);
    this.deliveredSet.add(clientMsgId);
  }
}
