import { describe, expect, test } from "vitest";
import { fold } from "./relations";
import type { Line } from "./view";

function line(seq: number, sender: string, text: string, relation?: Line["relation"]): Line {
  return { key: `s${seq}`, seq, sender, text, action: false, tsMs: seq, status: "delivered", relation };
}

/** The folded lines in words, as bob sees them. */
function render(lines: Line[]): string {
  return fold(lines, "bob")
    .sort((a, b) => a.seq! - b.seq!)
    .map((l) => {
      let out = `${l.seq}:${l.text}`;
      if (l.edited) out += " (edited)";
      if (l.deleted) out += " (deleted)";
      if (l.replyTo) out += ` [re ${l.replyTo.seq}: ${l.replyTo.quote}]`;
      for (const r of l.reactions ?? []) out += ` ${r.key}${r.count}${r.mine ? "*" : ""}`;
      return out;
    })
    .join(" | ");
}

describe("relations fold into the lines they name (§8.6.6)", () => {
  const cases: [string, Line[], string][] = [
    [
      "the latest edit wins",
      [line(1, "alice", "helo"), line(2, "alice", "hello", { kind: "edit", targetSeq: 1 }), line(3, "alice", "hello!", { kind: "edit", targetSeq: 1 })],
      "1:hello! (edited)",
    ],
    [
      "a deletion drops text, edits, reactions and quotes of it",
      [
        line(1, "alice", "oops"),
        line(2, "alice", "oops2", { kind: "edit", targetSeq: 1 }),
        line(3, "bob", "", { kind: "react", targetSeq: 1, key: "👍", remove: false }),
        line(4, "bob", "what?", { kind: "reply", targetSeq: 1, quote: "oops2" }),
        line(5, "alice", "", { kind: "redact", targetSeq: 1 }),
      ],
      "1: (deleted) | 4:what? [re 1: ]",
    ],
    [
      "a reaction counts while its user's latest react message adds it",
      [
        line(1, "alice", "hi"),
        line(2, "bob", "", { kind: "react", targetSeq: 1, key: "👍", remove: false }),
        line(3, "carol", "", { kind: "react", targetSeq: 1, key: "👍", remove: false }),
        line(4, "carol", "", { kind: "react", targetSeq: 1, key: "👍", remove: true }),
        line(5, "alice", "", { kind: "react", targetSeq: 1, key: "🎉", remove: false }),
      ],
      "1:hi 🎉1 👍1*",
    ],
  ];
  for (const [name, lines, want] of cases) {
    test(name, () => {
      expect(render(lines)).toBe(want);
      expect(render([...lines].reverse())).toBe(want);
    });
  }

  test("a message from history already deleted stays deleted", () => {
    expect(render([{ ...line(1, "alice", ""), redacted: true }])).toBe("1: (deleted)");
  });
});
