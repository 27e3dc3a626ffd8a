// The app's shell: the login screen until there is a token, then the rooms
// list and the chat view (one at a time on a phone, side by side on a
// desktop). The token is kept in localStorage so a reload stays logged in.

import { useSignal, useSignalEffect } from "@preact/signals";
import { useEffect, useMemo, useState } from "preact/hooks";
import type { Login as LoginResult } from "./api";
import { logout as apiLogout } from "./api";
import { Chat } from "./Chat";
import { Login } from "./Login";
import { ChatModel } from "./model";
import { Rooms } from "./Rooms";
import type { Connection } from "./view";

const LOGIN_KEY = "confab.login";

function savedLogin(): LoginResult | null {
  try {
    const raw = localStorage.getItem(LOGIN_KEY);
    if (!raw) return null;
    const login = JSON.parse(raw) as LoginResult;
    return login.expiresAtMs > Date.now() ? login : null;
  } catch {
    return null;
  }
}

function stateLabel(connection: Connection, nowMs: number): string {
  switch (connection.kind) {
    case "online":
      return "online";
    case "connecting":
      return "connecting…";
    case "reconnecting":
      return `reconnecting in ${Math.max(0, Math.ceil((connection.atMs - nowMs) / 1000))} s`;
    case "offline":
      return "offline";
  }
}

export function App() {
  const [login, setLogin] = useState<LoginResult | null>(savedLogin);
  if (!login) {
    return (
      <Login
        onLogin={(result) => {
          localStorage.setItem(LOGIN_KEY, JSON.stringify(result));
          setLogin(result);
        }}
      />
    );
  }
  return (
    <Main
      login={login}
      onLoggedOut={() => {
        localStorage.removeItem(LOGIN_KEY);
        setLogin(null);
      }}
    />
  );
}

function Main({ login, onLoggedOut }: { login: LoginResult; onLoggedOut: () => void }) {
  const model = useMemo(() => new ChatModel(login), [login.token]);
  const now = useSignal(Date.now());
  const [screen, setScreen] = useState<"rooms" | "chat">("rooms");

  useEffect(() => {
    model.start();
    // The clock behind "reconnecting in N s" and "5 min ago".
    const tick = setInterval(() => (now.value = Date.now()), 1000);
    return () => {
      clearInterval(tick);
      model.stop();
    };
  }, [model]);

  useSignalEffect(() => {
    if (model.loggedOut.value) onLoggedOut();
  });

  // The tab's title counts what is unread, as chat apps do.
  useSignalEffect(() => {
    const unread = model.unreadTotal.value;
    document.title = unread > 0 ? `(${unread}) Confab` : "Confab";
  });

  // Keyboard: Ctrl+K (⌘K) finds a room, Alt+↑/↓ moves between joined rooms,
  // Escape goes back to the rooms list (the one-screen phone layout).
  useEffect(() => {
    function onKey(e: KeyboardEvent) {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
        e.preventDefault();
        setScreen("rooms");
        document.getElementById("room-filter")?.focus();
      } else if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
        const rooms = model.joinedRooms();
        if (rooms.length === 0) return;
        e.preventDefault();
        const at = rooms.indexOf(model.current.value ?? "");
        const next = e.key === "ArrowUp" ? (at <= 0 ? rooms.length - 1 : at - 1) : (at + 1) % rooms.length;
        model.open(rooms[next]!);
        setScreen("chat");
      } else if (e.key === "Escape" && !e.isComposing) {
        setScreen("rooms");
      }
    }
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [model]);

  const current = model.current.value;
  const connection = model.connection.value;
  return (
    <div class="shell">
      <header class="topbar">
        <strong>Confab</strong>
        <span class={`state ${connection.kind}`} role="status">
          {stateLabel(connection, now.value)}
        </span>
        <span class="me">{login.username}</span>
        <button
          type="button"
          class="link"
          onClick={async () => {
            try {
              await apiLogout(login.token);
            } catch {
              // Revoked already, or unreachable: forgetting it here is what the user asked.
            }
            model.stop();
            onLoggedOut();
          }}
        >
          Log out
        </button>
      </header>
      <div class={`panes ${screen === "chat" && current ? "show-chat" : "show-rooms"}`}>
        <Rooms
          rooms={model.rooms.value}
          current={current}
          nowMs={now.value}
          onOpen={(room) => {
            model.open(room);
            setScreen("chat");
          }}
          onCreate={(name, topic) => {
            model.create(name, topic);
            setScreen("chat");
          }}
        />
        {current ? (
          <Chat
            key={current}
            room={current}
            me={login.username}
            timeline={model.timeline(current)}
            typing={model.typing.value[current] ?? []}
            members={model.members.value[current] ?? null}
            connection={connection}
            nowMs={now.value}
            initialDraft={model.draft(current)}
            onDraft={(text) => model.saveDraft(current, text)}
            onSend={(text) => model.submit(current, text)}
            onRetry={(id) => model.retry(id)}
            onEdit={(id) => model.discard(id)}
            onLoadOlder={() => model.loadOlder(current)}
            onTyping={(active) => model.setTyping(current, active)}
            onEditMessage={(line, text) => model.edit(current, line, text)}
            onDeleteMessage={(line) => model.remove(current, line)}
            onReply={(line, text) => model.reply(current, line, text)}
            onReact={(line, key) => model.react(current, line, key)}
            onBack={() => setScreen("rooms")}
            onMembers={() => model.toggleMembers(current)}
            onLeave={() => {
              model.leave(current);
              setScreen("rooms");
            }}
          />
        ) : (
          <main class="no-room">
            <p>Pick a room, or create one.</p>
          </main>
        )}
      </div>
      <p class="error" role="alert">
        {model.notice.value}
      </p>
    </div>
  );
}
