import { describe, expect, it } from "vitest";
import { ApiError, explain } from "./api";

describe("a refusal in words", () => {
  const cases: [name: string, error: unknown, want: string][] = [
    ["wrong password", new ApiError(401, "invalid_credentials", "unknown username or wrong password"), "unknown username or wrong password"],
    [
      "throttled, the wait in seconds rounded up",
      new ApiError(429, "too_many_attempts", "too many failed logins for this username; wait retry_after_ms and try again", 1200),
      "too many failed logins for this username; try again in 2 s",
    ],
    [
      "throttled with a message of another shape keeps it",
      new ApiError(429, "too_many_attempts", "slow down", 500),
      "slow down; try again in 1 s",
    ],
    ["taken name", new ApiError(409, "username_taken", "that username is taken; choose another"), "that username is taken; choose another"],
    ["no wait given", new ApiError(429, "too_many_attempts", "busy; try again", 0), "busy; try again"],
    ["not from the server", new TypeError("boom"), "something went wrong; try again"],
  ];
  for (const [name, error, want] of cases) {
    it(name, () => expect(explain(error)).toBe(want));
  }
});
