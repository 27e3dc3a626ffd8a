// The mention rule, the marker rule and per-room counts (spec §11.3); the
// cases of the unit tests in crates/protocol/src/read.rs.

import { describe, expect, it } from "vitest";
import { COUNT_CAP, countsFor, MAX_MENTIONS, markerAfter, mentions, type ReadStateLike, RoomRead } from "./read";

function message(seq: number, sender: string, text: string) {
  return { seq: BigInt(seq), sender, text };
}

function state(readSeq: number, unread: number, mentionCount: number, countedSeq: number): ReadStateLike {
  return { readSeq: BigInt(readSeq), unreadCount: unread, mentionCount, countedSeq: BigInt(countedSeq) };
}

describe("mentions", () => {
  it.each<[string, string[]]>([
    ["@bob", ["bob"]],
    ["hi @bob!", ["bob"]],
    ["@Bob, look", ["bob"]],
    ["(@bob)", ["bob"]],
    ["@bob's idea", ["bob"]],
    ["@bob @ann @bob", ["bob", "ann"]],
    ["mail a@bob.org", []],
    ["@@bob", []],
    ["@b", []],
    ["@", []],
    ["@ bob", []],
    ["@-bob", []],
    ["@bob_smith", ["bob_smith"]],
    ["@bob-", ["bob-"]],
    ["é@bob", ["bob"]],
    ["@bobé", ["bob"]],
    ["😀@bob", ["bob"]],
    ["@abcdefghijklmnopqrstuvwxyz0123456789", []],
    ["line\n@bob", ["bob"]],
  ])("%j mentions %j", (text, want) => {
    expect(mentions(text)).toEqual(want);
  });

  it("counts only the first 50 distinct names", () => {
    const text = Array.from({ length: 80 }, (_, i) => `@user${i} `).join("");
    const found = mentions(text);
    expect(found).toHaveLength(MAX_MENTIONS);
    expect(found[0]).toBe("user0");
    expect(found[49]).toBe("user49");
  });

  it("own messages never count", () => {
    expect(countsFor("bob", "@bob", "bob")).toEqual({ unread: false, mention: false });
    expect(countsFor("ann", "@bob", "bob")).toEqual({ unread: true, mention: true });
    expect(countsFor("ann", "@bobby", "bob")).toEqual({ unread: true, mention: false });
  });

  it("the marker rule: never back, never past the head", () => {
    expect(markerAfter(5n, 7n, 10n)).toBe(7n);
    expect(markerAfter(5n, 3n, 10n)).toBe(5n);
    expect(markerAfter(5n, 99n, 10n)).toBe(10n);
    expect(markerAfter(0n, 0n, 0n)).toBe(0n);
  });
});

describe("RoomRead", () => {
  it("live messages add to the server counts once", () => {
    const read = RoomRead.fromWire(state(10, 2, 1, 12));
    expect(read.handleMessage(message(12, "ann", "@bob"), "bob")).toBe(false); // counted already
    expect(read.handleMessage(message(13, "ann", "hi @bob"), "bob")).toBe(true);
    expect(read.handleMessage(message(13, "ann", "hi @bob"), "bob")).toBe(false); // a repeat
    expect(read.handleMessage(message(14, "bob", "mine"), "bob")).toBe(false);
    expect(read.handleMessage(message(15, "ann", "hi"), "bob")).toBe(true);
    expect([read.unreadCount(), read.mentionCount()]).toEqual([4, 2]);
    expect(read.countedSeq()).toBe(15n);
  });

  it("an older state keeps the messages counted after it", () => {
    const read = RoomRead.fromWire(state(0, 0, 0, 0));
    for (let seq = 1; seq <= 5; seq++) read.handleMessage(message(seq, "ann", "hi"), "bob");
    // Another device read up to 3 when the head was 4; 5 came later.
    expect(read.handleState(state(3, 1, 0, 4))).toBe(true);
    expect(read.unreadCount()).toBe(2); // seq 4 from the server, seq 5 from here
    expect(read.readSeq()).toBe(3n);
    expect(read.handleState(state(2, 3, 0, 5))).toBe(false); // a marker never moves back
    expect(read.readSeq()).toBe(3n);
  });

  it("reading locally clears what it covers", () => {
    let read = RoomRead.fromWire(state(0, 3, 1, 3));
    read.handleMessage(message(4, "ann", "@bob"), "bob");
    read.handleMessage(message(5, "ann", "x"), "bob");
    read.readUpTo(4n);
    expect([read.unreadCount(), read.mentionCount()]).toEqual([1, 0]);
    read.readUpTo(2n);
    expect(read.readSeq()).toBe(4n);
    // Below the server's counts the local view cannot tell: unchanged.
    read = RoomRead.fromWire(state(0, 3, 1, 3));
    read.readUpTo(2n);
    expect(read.unreadCount()).toBe(3);
    expect(read.counts()).toEqual({ readSeq: 2n, unread: 3, mentions: 1 });
  });

  it("counts saturate at the cap", () => {
    let read = RoomRead.fromWire(state(0, COUNT_CAP, 0, 100));
    read.handleMessage(message(101, "ann", "x"), "bob");
    expect(read.unreadCount()).toBe(COUNT_CAP);
    read = new RoomRead();
    for (let seq = 1; seq <= COUNT_CAP + 5; seq++) read.handleMessage(message(seq, "ann", "x"), "bob");
    expect(read.unreadCount()).toBe(COUNT_CAP);
    expect(RoomRead.fromWire(state(0, 20_000, 20_000, 1)).counts()).toEqual({ readSeq: 0n, unread: COUNT_CAP, mentions: COUNT_CAP });
  });
});
