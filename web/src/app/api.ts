// The HTTP endpoints of spec §5: register, login, logout. Every refusal
// is an ErrorBody (§5.5) whose message the server wrote for people; it is
// shown as given, with the wait when there is one.

/** A refusal from the server, or a network failure (`code` "network"). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** A successful login (§5.3). */
export interface Login {
  token: string;
  username: string;
  expiresAtMs: number;
}

async function post(path: string, body?: unknown, token?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token !== undefined) headers["authorization"] = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "cannot reach the server; check the connection and try again");
  }
  if (response.ok) return response;
  let code = "unknown";
  let message = `the server answered ${response.status}`;
  let retryAfterMs: number | undefined;
  try {
    const parsed = (await response.json()) as {
      error?: { code?: string; message?: string; retry_after_ms?: number };
    };
    code = parsed.error?.code ?? code;
    message = parsed.error?.message ?? message;
    retryAfterMs = parsed.error?.retry_after_ms;
  } catch {
    // Not an ErrorBody (a proxy's page, say): the status says enough.
  }
  throw new ApiError(response.status, code, message, retryAfterMs);
}

/** `POST /v1/login`. */
export async function login(username: string, password: string): Promise<Login> {
  const response = await post("/v1/login", { username, password });
  const body = (await response.json()) as { token: string; username: string; expires_at_ms: number };
  return { token: body.token, username: body.username, expiresAtMs: body.expires_at_ms };
}

/** `POST /v1/register`; log in next (no token is issued). */
export async function register(username: string, password: string): Promise<void> {
  await post("/v1/register", { username, password });
}

/** `POST /v1/logout`: revokes the token; its sockets are closed with 4410. */
export async function logout(token: string): Promise<void> {
  await post("/v1/logout", undefined, token);
}

/**
 * A refusal in words for the login screen. A throttled one says how long
 * to wait in seconds: the server's message names the field
 * (`retry_after_ms`) for programs, which a person should not have to read.
 */
export function explain(error: unknown): string {
  if (!(error instanceof ApiError)) return "something went wrong; try again";
  if (error.retryAfterMs !== undefined && error.retryAfterMs > 0) {
    const seconds = Math.ceil(error.retryAfterMs / 1000);
    const reason = error.message.replace(/;?\s*wait retry_after_ms and try again\.?$/, "");
    return `${reason}; try again in ${seconds} s`;
  }
  return error.message;
}
