// The chat view: history with scroll-back (older pages load when scrolled
// to the top), day dividers, lines grouped by sender, own messages marked
// pending, delivered or failed with a retry, typing, the member list, an
// offline banner while disconnected (typing still works: messages wait in
// the outbox). Text is rendered as text: never as HTML.

import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { clock, day } from "./format";
import { fold } from "./relations";
import type { Connection, Line, Timeline } from "./view";

/** The reactions offered in a message's menu (any key may be sent). */
const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];

interface Props {
  room: string;
  me: string;
  timeline: Timeline;
  typing: string[];
  members: string[] | null;
  connection: Connection;
  nowMs: number;
  /** The draft this room had when it was last left (kept across reloads). */
  initialDraft: string;
  onDraft: (draft: string) => void;
  /** A message or a command; false when refused, and the draft stays. */
  onSend: (text: string) => boolean;
  onRetry: (clientMsgId: string) => void;
  /** Takes a failed send back into the composer. */
  onEdit: (clientMsgId: string) => string | undefined;
  onLoadOlder: () => void;
  onTyping: (active: boolean) => void;
  /** Replaces the text of one of the user's messages (§8.6.2). */
  onEditMessage: (line: Line, text: string) => void;
  /** Deletes one of the user's messages for everyone (§8.6.3). */
  onDeleteMessage: (line: Line) => void;
  /** Answers a message, quoting it (§8.6.4). */
  onReply: (line: Line, text: string) => void;
  /** Adds the user's reaction, or takes it back (§8.6.5). */
  onReact: (line: Line, key: string) => void;
  onBack: () => void;
  onMembers: () => void;
  onLeave: () => void;
}

function banner(connection: Connection, nowMs: number): string | null {
  switch (connection.kind) {
    case "online":
      return null;
    case "connecting":
      return "Connecting… Messages you send wait and go out once connected.";
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((connection.atMs - nowMs) / 1000));
      return `Offline: reconnecting in ${seconds} s (attempt ${connection.attempt + 1}). Messages you send wait and go out once connected.`;
    }
    case "offline":
      return `Disconnected: ${connection.reason}`;
  }
}

function typingText(names: string[]): string {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

export function Chat(props: Props) {
  const { room, me, timeline, typing, members, connection, nowMs } = props;
  const [draft, setDraftState] = useState(props.initialDraft);
  // The message whose menu is open, and whether its deletion awaits a
  // second click; what the composer is doing besides a new message.
  const [menuFor, setMenuFor] = useState<number | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [mode, setMode] = useState<{ kind: "edit" | "reply"; line: Line } | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  function setDraft(value: string) {
    setDraftState(value);
    props.onDraft(value);
  }
  const list = useRef<HTMLOListElement>(null);
  const stickToBottom = useRef(true);
  const heightBefore = useRef<number | null>(null);

  // Keep the newest line in view unless the reader scrolled up; when an
  // older page is prepended, keep the line the reader looks at in place.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (heightBefore.current !== null) {
      el.scrollTop += el.scrollHeight - heightBefore.current;
      heightBefore.current = null;
    } else if (stickToBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [timeline.lines]);

  useEffect(() => {
    stickToBottom.current = true;
  }, [room]);

  function onScroll() {
    const el = list.current;
    if (!el) return;
    stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 40 && timeline.hasMore && !timeline.loading) {
      heightBefore.current = el.scrollHeight;
      props.onLoadOlder();
    }
  }

  function submit(event: Event) {
    event.preventDefault();
    const text = draft.replace(/\r\n/g, "\n");
    if (!text.trim()) return;
    props.onTyping(false);
    if (mode?.kind === "edit") {
      props.onEditMessage(mode.line, text);
      setMode(null);
      setDraft("");
      return;
    }
    if (mode?.kind === "reply") {
      props.onReply(mode.line, text);
      setMode(null);
      stickToBottom.current = true;
      setDraft("");
      return;
    }
    if (!props.onSend(text)) return;
    stickToBottom.current = true;
    setDraft("");
  }

  function edit(clientMsgId: string) {
    const text = props.onEdit(clientMsgId);
    if (text === undefined) return;
    // What was being typed meanwhile is kept, after the returned text.
    setDraft(draft.trim() ? `${text}\n${draft}` : text);
    input.current?.focus();
  }

  // "First unread" may point above the loaded pages: older ones load
  // until the marker is there, then it is scrolled to.
  const [seeking, setSeeking] = useState(false);
  function jumpToUnread() {
    const marker = list.current?.querySelector(".unread-marker");
    if (marker) {
      stickToBottom.current = false;
      marker.scrollIntoView({ block: "start" });
      setSeeking(false);
    } else if (timeline.hasMore) {
      setSeeking(true);
      if (!timeline.loading) {
        heightBefore.current = list.current?.scrollHeight ?? null;
        props.onLoadOlder();
      }
    } else {
      setSeeking(false);
    }
  }
  useEffect(() => {
    if (seeking) jumpToUnread();
  }, [seeking, timeline.lines, timeline.loading]);

  const notice = banner(connection, nowMs);
  let lastDay = "";
  let lastSender = "";
  // The marker goes after the last line read, so only where that line (or
  // the room's start) is loaded: above an unloaded page it would lie.
  const readAtOpen = timeline.readSeqAtOpen;
  let markerShown =
    readAtOpen === undefined ||
    (timeline.hasMore && !timeline.lines.some((l) => l.seq !== undefined && l.seq <= readAtOpen));
  const shown = fold(timeline.lines, me);
  const bySeq = new Map(shown.filter((l) => l.seq !== undefined).map((l) => [l.seq!, l]));
  function openMenu(seq: number | null) {
    setMenuFor(seq);
    setConfirmDelete(false);
  }
  function startEdit(line: Line) {
    setMode({ kind: "edit", line });
    setDraft(line.text);
    openMenu(null);
    input.current?.focus();
  }
  function startReply(line: Line) {
    setMode({ kind: "reply", line });
    openMenu(null);
    input.current?.focus();
  }
  const rows = shown.map((line: Line) => {
    const items = [];
    const lineDay = day(line.tsMs);
    if (lineDay !== lastDay) {
      items.push(
        <li class="day" key={`day-${lineDay}-${line.key}`}>
          {lineDay}
        </li>,
      );
      lastDay = lineDay;
      lastSender = "";
    }
    if (
      !markerShown &&
      line.seq !== undefined &&
      line.seq > readAtOpen! &&
      line.sender !== me
    ) {
      markerShown = true;
      items.push(
        <li class="unread-marker" key="unread-marker">
          New since you left
        </li>,
      );
      lastSender = "";
    }
    if (line.notice) {
      items.push(
        <li key={line.key} class="notice">
          {line.text}
        </li>,
      );
      lastSender = "";
      return items;
    }
    const grouped = line.sender === lastSender && !line.action;
    lastSender = line.action ? "" : line.sender;
    items.push(
      <li
        key={line.key}
        class={`line ${line.status}${grouped ? " grouped" : ""}${line.sender === me ? " mine" : ""}`}
        data-seq={line.seq}
      >
        {!grouped && !line.action && <span class="sender">{line.sender}</span>}
        <span class="time">{clock(line.tsMs)}</span>
        {line.replyTo && (
          <span class="quote">
            ↪ {bySeq.get(line.replyTo.seq)?.sender ?? "a message"}:{" "}
            {line.replyTo.quote === "" ? <em>message deleted</em> : line.replyTo.quote}
          </span>
        )}
        {line.deleted ? (
          <span class="text deleted">message deleted</span>
        ) : (
          <span class="text">{line.action ? `* ${line.sender} ${line.text}` : line.text}</span>
        )}
        {line.edited && <span class="edited">(edited)</span>}
        {line.reactions && line.reactions.length > 0 && (
          <span class="reactions">
            {line.reactions.map((r) => (
              <button
                type="button"
                key={r.key}
                class={`reaction${r.mine ? " mine" : ""}`}
                aria-pressed={r.mine}
                aria-label={`${r.key} ${r.count}${r.mine ? ", yours: click to take it back" : ""}`}
                onClick={() => props.onReact(line, r.key)}
              >
                {r.key} {r.count}
              </button>
            ))}
          </span>
        )}
        {line.seq !== undefined && !line.deleted && line.messageId && (
          <button
            type="button"
            class="link menu-button"
            aria-label={`Actions for message ${line.seq}`}
            aria-expanded={menuFor === line.seq}
            onClick={() => openMenu(menuFor === line.seq ? null : line.seq!)}
          >
            ⋯
          </button>
        )}
        {menuFor === line.seq && (
          <span class="menu" role="group" aria-label="Message actions">
            <button type="button" class="link" onClick={() => startReply(line)}>
              Reply
            </button>
            {QUICK_REACTIONS.map((key) => (
              <button
                type="button"
                class="link"
                key={key}
                aria-label={`React ${key}`}
                onClick={() => {
                  props.onReact(line, key);
                  openMenu(null);
                }}
              >
                {key}
              </button>
            ))}
            {line.sender === me && (
              <>
                <button type="button" class="link" onClick={() => startEdit(line)}>
                  Edit
                </button>
                {confirmDelete ? (
                  <button
                    type="button"
                    class="link danger"
                    onClick={() => {
                      props.onDeleteMessage(line);
                      openMenu(null);
                    }}
                  >
                    Delete for everyone
                  </button>
                ) : (
                  <button type="button" class="link" onClick={() => setConfirmDelete(true)}>
                    Delete
                  </button>
                )}
              </>
            )}
          </span>
        )}
        {line.status === "pending" && <span class="status">sending…</span>}
        {line.status === "failed" && (
          <span class="status">
            not sent: {line.error}{" "}
            {line.clientMsgId && (
              <>
                <button type="button" class="link" onClick={() => props.onRetry(line.clientMsgId!)}>
                  Retry
                </button>{" "}
                <button type="button" class="link" onClick={() => edit(line.clientMsgId!)}>
                  Edit
                </button>
              </>
            )}
          </span>
        )}
      </li>,
    );
    return items;
  });

  return (
    <main class="chat" aria-labelledby="chat-title">
      <header class="chat-head">
        <button type="button" class="back" onClick={props.onBack} aria-label="Back to rooms">
          ←
        </button>
        <h2 id="chat-title">#{room}</h2>
        {timeline.readSeqAtOpen !== undefined && (
          <button type="button" class="link" onClick={jumpToUnread}>
            First unread
          </button>
        )}
        <button type="button" class="link" onClick={props.onMembers} aria-expanded={members !== null}>
          Members
        </button>
        <button type="button" class="link" onClick={props.onLeave}>
          Leave
        </button>
      </header>
      {notice && (
        <p class="banner" role="status">
          {notice}
        </p>
      )}
      {members && (
        <aside class="members" aria-label={`Members of #${room}`}>
          <ul>
            {members.map((m) => (
              <li key={m}>{m}</li>
            ))}
          </ul>
        </aside>
      )}
      <ol class="timeline" ref={list} onScroll={onScroll} aria-label={`Messages in #${room}`} aria-live="polite">
        {timeline.loading && <li class="loading">Loading…</li>}
        {!timeline.hasMore && !timeline.loading && <li class="start">This is the start of #{room}.</li>}
        {rows}
      </ol>
      <p class="typing" aria-live="polite">
        {typingText(typing)}
      </p>
      {mode && (
        <p class="composing" role="status">
          {mode.kind === "edit"
            ? "Editing your message"
            : `Replying to ${mode.line.sender}: “${mode.line.text.slice(0, 60)}”`}{" "}
          <button
            type="button"
            class="link"
            onClick={() => {
              if (mode.kind === "edit") setDraft("");
              setMode(null);
            }}
          >
            Cancel
          </button>
        </p>
      )}
      <form class="composer" onSubmit={submit}>
        <label class="visually-hidden" for="composer-input">
          Message #{room}
        </label>
        <textarea
          id="composer-input"
          ref={input}
          rows={1}
          placeholder={`Message #${room}`}
          title="Enter sends, Shift+Enter starts a new line, /help lists the commands"
          value={draft}
          onInput={(e) => {
            const value = (e.target as HTMLTextAreaElement).value;
            setDraft(value);
            props.onTyping(value.trim().length > 0 && !value.startsWith("/"));
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
          }}
        />
        <button type="submit">Send</button>
      </form>
    </main>
  );
}
