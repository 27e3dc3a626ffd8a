// The login screen: log in, or register then log in. The server's message
// is shown as it comes (wrong password, throttled with its wait, taken
// name, weak password), in a live region so screen readers hear it.

import { useEffect, useState } from "preact/hooks";
import { ApiError, type Login as LoginResult, explain, login, register } from "./api";

interface Props {
  onLogin: (login: LoginResult) => void;
}

export function Login({ onLogin }: Props) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  // While throttled the button waits too, so pressing it again cannot
  // lengthen the lockout (each refused try doubles it, §15.3).
  const [waitUntil, setWaitUntil] = useState(0);
  useEffect(() => {
    if (waitUntil === 0) return;
    const timer = setTimeout(() => setWaitUntil(0), Math.max(waitUntil - Date.now(), 0));
    return () => clearTimeout(timer);
  }, [waitUntil]);

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      if (mode === "register") await register(username, password);
      onLogin(await login(username, password));
    } catch (err) {
      setError(explain(err));
      if (err instanceof ApiError && err.retryAfterMs) setWaitUntil(Date.now() + err.retryAfterMs);
    } finally {
      setBusy(false);
    }
  }

  const registering = mode === "register";
  return (
    <main class="login" aria-labelledby="login-title">
      <form class="login-form" onSubmit={submit}>
        <h1 id="login-title">Confab</h1>
        <p class="login-sub">{registering ? "Create an account" : "Log in to chat"}</p>
        <label for="username">Username</label>
        <input
          id="username"
          name="username"
          autocomplete="username"
          autocapitalize="none"
          spellcheck={false}
          required
          value={username}
          onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
        />
        <label for="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete={registering ? "new-password" : "current-password"}
          required
          value={password}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          aria-describedby={registering ? "password-rules" : undefined}
        />
        {registering && (
          <p id="password-rules" class="hint">
            At least 15 characters and not a common password; four random words work well.
          </p>
        )}
        <p class="error" role="alert" aria-live="assertive">
          {error}
        </p>
        <button type="submit" disabled={busy || waitUntil > 0}>
          {registering ? "Register and log in" : "Log in"}
        </button>
        <button
          type="button"
          class="link"
          onClick={() => {
            setMode(registering ? "login" : "register");
            setError("");
          }}
        >
          {registering ? "I have an account: log in" : "New here? Register"}
        </button>
      </form>
    </main>
  );
}
