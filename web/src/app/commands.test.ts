import { describe, expect, test } from "vitest";
import { type Command, parseCommand } from "./commands";

// One driver, many cases: what each draft means.
const cases: [string, Command | null][] = [
  ["", null],
  ["   \n", null],
  ["hello", { kind: "say", text: "hello", action: false }],
  ["  leading spaces stay", { kind: "say", text: "  leading spaces stay", action: false }],
  ["line one\nline two", { kind: "say", text: "line one\nline two", action: false }],
  ["/me waves", { kind: "say", text: "waves", action: true }],
  ["/ME waves", { kind: "say", text: "waves", action: true }],
  ["/me waves\nand smiles", { kind: "say", text: "waves\nand smiles", action: true }],
  ["//etc/hosts is a file", { kind: "say", text: "/etc/hosts is a file", action: false }],
  ["/join general", { kind: "join", room: "general" }],
  ["/join #dev ", { kind: "join", room: "dev" }],
  ["/leave", { kind: "leave" }],
  ["/part", { kind: "leave" }],
  ["/members", { kind: "members" }],
  ["/who", { kind: "members" }],
  ["/help", { kind: "help" }],
];

describe("parseCommand", () => {
  for (const [draft, want] of cases) {
    test(JSON.stringify(draft), () => {
      const got = parseCommand(draft);
      if (want?.kind === "help") expect(got?.kind).toBe("help");
      else expect(got).toEqual(want);
    });
  }

  // Refusals say what went wrong and what to type instead.
  for (const [draft, says] of [
    ["/me", "usage: /me ACTION"],
    ["/me   ", "usage: /me ACTION"],
    ["/join", "usage: /join ROOM"],
    ["/join two words", "usage: /join ROOM"],
    ["/mee waves", "unknown command /mee; your text was not sent"],
    ["/nick bob", "unknown command /nick"],
    ["/", "is not a command"],
    ["/ x", "is not a command"],
  ] as const) {
    test(`${JSON.stringify(draft)} is refused`, () => {
      const got = parseCommand(draft);
      expect(got?.kind).toBe("error");
      expect(got?.kind === "error" && got.message).toContain(says);
    });
  }
});
