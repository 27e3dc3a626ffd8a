// What the user is told of own sends: pending once, delivered once (spec
// §8.4, §14.1); the unit tests of crates/protocol/src/session/sends.rs.

import { expect, it } from "vitest";
import { DELIVERED_MEMORY, OwnSends } from "./sends";

it("a send is pending once and delivered once", () => {
  const now = 5000;
  const sends = new OwnSends();
  expect(sends.queued("a", now + 400)).toBe(false);
  expect(sends.nextDue()).toBe(now + 400);
  expect(sends.due(now)).toEqual([]);
  expect(sends.due(now + 1000)).toEqual(["a"]);
  expect(sends.due(now + 2000)).toEqual([]);
  expect(sends.stored("a")).toBe(true);
  expect(sends.stored("a")).toBeUndefined();
  expect(sends.isKnown("a")).toBe(true);
  expect(sends.isKnown("b")).toBe(false);
  expect(sends.nextDue()).toBeUndefined();
});

it("a quick delivery was never pending, and a send queued offline is pending at once", () => {
  const sends = new OwnSends();
  sends.queued("quick", 6000);
  expect(sends.stored("quick")).toBe(false);
  expect(sends.queued("offline", undefined)).toBe(true);
  expect(sends.queued("offline", undefined)).toBe(false); // one report per send
  sends.refused("offline");
  expect(sends.isKnown("offline")).toBe(false);
  expect(sends.isKnown("")).toBe(false);
});

it("the memory of delivered sends is bounded", () => {
  const sends = new OwnSends();
  for (let i = 0; i < DELIVERED_MEMORY + 10; i++) {
    sends.queued(String(i), undefined);
    sends.stored(String(i));
  }
  expect(sends.deliveredRemembered()).toBe(DELIVERED_MEMORY);
  expect(sends.isKnown("0")).toBe(false);
  expect(sends.isKnown(String(DELIVERED_MEMORY + 9))).toBe(true);
});
