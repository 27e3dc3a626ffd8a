// The outbox and its IndexedDB store (spec §8.5, §14.1): entries keep their
// order and ids, and survive a reload (a new store on the same database).

import "fake-indexeddb/auto";
import { openDB } from "idb";
import { afterEach, describe, expect, it } from "vitest";
import { IndexedDbOutboxStore, MemoryOutboxStore, Outbox, type OutboxEntry } from "./outbox";

const entry = (id: string, room = "lobby"): OutboxEntry => ({ clientMsgId: id, room, text: `text ${id}`, action: false });

describe("Outbox", () => {
  it("keeps order, refuses a repeated id and tracks what is in flight", () => {
    const outbox = new Outbox();
    expect(outbox.push(entry("a"))).toBe(true);
    expect(outbox.push(entry("b"))).toBe(true);
    expect(outbox.push(entry("a"))).toBe(false);
    expect(outbox.length).toBe(2);
    expect(outbox.nextUnsent(7)?.clientMsgId).toBe("a");
    expect(outbox.nextUnsent(8)?.clientMsgId).toBe("b");
    expect(outbox.nextUnsent(9)).toBeUndefined();
    expect(outbox.inFlight()).toBe(2);
    expect(outbox.byRequest(8)?.clientMsgId).toBe("b");
    outbox.unsend(7);
    expect(outbox.inFlight()).toBe(1);
    expect(outbox.nextUnsent(10)?.clientMsgId).toBe("a");
    outbox.resetInFlight();
    expect(outbox.inFlight()).toBe(0);
    expect(outbox.remove("a")?.clientMsgId).toBe("a");
    expect(outbox.remove("a")).toBeUndefined();
    expect(outbox.entries().map((e) => e.clientMsgId)).toEqual(["b"]);
  });

  it("hands out copies, so a caller cannot change what will be sent", () => {
    const outbox = new Outbox();
    outbox.push(entry("a"));
    const [copy] = outbox.entries();
    if (copy) copy.text = "changed";
    expect(outbox.get("a")?.text).toBe("text a");
  });
});

describe("IndexedDbOutboxStore", () => {
  const stores: IndexedDbOutboxStore[] = [];
  const open = (account: string, server = "https://chat.example", dbName = "confab-test") => {
    const store = new IndexedDbOutboxStore({ account, server, dbName });
    stores.push(store);
    return store;
  };
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });

  it("loads nothing before the first save", async () => {
    expect(await open("fresh", "https://other.example").load()).toEqual([]);
  });

  it("survives a reload: a new store reads what the old one saved, in order", async () => {
    const before = open("alice");
    await before.save([entry("1"), { ...entry("2"), action: true }, entry("3")]);
    await before.close();
    const after = open("alice");
    expect(await after.load()).toEqual([entry("1"), { ...entry("2"), action: true }, entry("3")]);
  });

  it("keeps one outbox per account and server", async () => {
    await open("bob").save([entry("bob-1")]);
    await open("carol").save([entry("carol-1")]);
    await open("bob", "https://elsewhere.example").save([entry("bob-elsewhere")]);
    expect((await open("bob").load()).map((e) => e.clientMsgId)).toEqual(["bob-1"]);
    expect((await open("carol").load()).map((e) => e.clientMsgId)).toEqual(["carol-1"]);
    expect((await open("bob", "https://elsewhere.example").load()).map((e) => e.clientMsgId)).toEqual(["bob-elsewhere"]);
  });

  it("a save replaces the whole outbox; an empty one removes the record", async () => {
    const store = open("dave");
    await store.save([entry("1"), entry("2")]);
    await store.save([entry("2")]);
    expect((await store.load()).map((e) => e.clientMsgId)).toEqual(["2"]);
    await store.save([]);
    expect(await store.load()).toEqual([]);
    const db = await openDB("confab-test", 1);
    expect(await db.get("outbox", ["https://chat.example", "dave"])).toBeUndefined();
    db.close();
  });

  it("skips records that are not entries", async () => {
    const store = open("eve");
    await store.save([entry("ok")]);
    const db = await openDB("confab-test", 1);
    await db.put(
      "outbox",
      { entries: [entry("ok"), { clientMsgId: 5, room: "x", text: "y" }, null, { clientMsgId: "no-action", room: "r", text: "t" }] },
      ["https://chat.example", "eve"],
    );
    db.close();
    expect(await store.load()).toEqual([entry("ok"), { clientMsgId: "no-action", room: "r", text: "t", action: false }]);
  });
});

it("MemoryOutboxStore copies in and out", async () => {
  const store = new MemoryOutboxStore([entry("a")]);
  const loaded = await store.load();
  if (loaded[0]) loaded[0].text = "changed";
  expect((await store.load())[0]?.text).toBe("text a");
  await store.save([entry("b")]);
  expect(store.saves).toBe(1);
  expect((await store.load()).map((e) => e.clientMsgId)).toEqual(["b"]);
});
