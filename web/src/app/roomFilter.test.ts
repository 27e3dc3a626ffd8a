import { describe, expect, it } from "vitest";
import { best, matching } from "./roomFilter";
import type { RoomRow } from "./view";

function row(name: string, topic = ""): RoomRow {
  return { name, topic, memberCount: 1, onlineCount: 1, lastActivityMs: 0, joined: true, unread: 0, mentions: 0 };
}

// Most recent activity first, as the list shows them.
const ROOMS = [row("offtopic"), row("rust-help", "ask about lifetimes"), row("rust"), row("general", "rust and more")];

describe("the room Enter opens", () => {
  const cases: [filter: string, want: string | undefined][] = [
    ["rust", "rust"], // exact beats a longer, more recent name
    ["RUST", "rust"], // case does not matter
    ["#rust", "rust"], // a leading # is the room's sigil, not part of the name
    ["rust-", "rust-help"], // prefix
    ["help", "rust-help"], // inside the name
    ["topic", "offtopic"],
    ["lifetimes", "rust-help"], // only the topic matches
    ["and more", "general"],
    ["", "offtopic"], // nothing typed: the first row
    ["zzz", undefined], // nothing matches: Enter does nothing
  ];
  for (const [filter, want] of cases) {
    it(`"${filter}" → ${want ?? "nothing"}`, () => {
      expect(best(ROOMS, filter)?.name).toBe(want);
    });
  }
});

describe("the rooms shown", () => {
  it("keeps the list's order and matches names and topics", () => {
    expect(matching(ROOMS, "rust").map((r) => r.name)).toEqual(["rust-help", "rust", "general"]);
    expect(matching(ROOMS, "  ").map((r) => r.name)).toEqual(ROOMS.map((r) => r.name));
  });
});
