// What the composer's text means: a message, or one of the few commands a
// chat user expects to type (as in Slack, Element and irssi). An unknown
// "/word" is refused with a hint instead of being sent as text, so a typo
// such as "/mee waves" never reaches the room; "//" sends a leading slash.

/** What one submitted draft asks for. */
export type Command =
  | { kind: "say"; text: string; action: boolean }
  | { kind: "join"; room: string }
  | { kind: "leave" }
  | { kind: "members" }
  | { kind: "help" }
  | { kind: "error"; message: string };

export const HELP =
  "Commands: /me ACTION sends an action, /join ROOM opens a room, /leave leaves this one, " +
  "/members shows who is here, /help shows this. Start with // to send a message that begins with /.";

/** Parses one draft; `null` for one with nothing to send. */
export function parseCommand(draft: string): Command | null {
  if (draft.trim() === "") return null;
  if (draft.startsWith("//")) return { kind: "say", text: draft.slice(1), action: false };
  if (!draft.startsWith("/")) return { kind: "say", text: draft, action: false };
  const match = /^\/(\S+)\s*([\s\S]*)$/.exec(draft);
  if (!match) return { kind: "error", message: `"/" alone is not a command. ${HELP}` };
  const name = match[1]!.toLowerCase();
  const rest = match[2]!;
  switch (name) {
    case "me":
      if (rest.trim() === "") return { kind: "error", message: "usage: /me ACTION (for example /me waves)" };
      return { kind: "say", text: rest, action: true };
    case "join": {
      const room = rest.trim().replace(/^#/, "");
      if (room === "" || /\s/.test(room)) return { kind: "error", message: "usage: /join ROOM (for example /join general)" };
      return { kind: "join", room };
    }
    case "leave":
    case "part":
      return { kind: "leave" };
    case "members":
    case "who":
    case "names":
      return { kind: "members" };
    case "help":
    case "?":
      return { kind: "help" };
    default:
      return { kind: "error", message: `unknown command /${match[1]}; your text was not sent. ${HELP}` };
  }
}
