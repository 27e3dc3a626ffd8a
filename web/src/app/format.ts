// Times and days as people read them, in the browser's locale.

export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function day(ms: number): string {
  return new Date(ms).toLocaleDateString(undefined, {
    weekday: "long",
    day: "numeric",
    month: "long",
    year: "numeric",
  });
}

/** "just now", "5 min ago", "3 h ago", or the date. */
export function ago(ms: number, nowMs: number): string {
  if (ms <= 0) return "never";
  const minutes = Math.floor((nowMs - ms) / 60_000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return new Date(ms).toLocaleDateString();
}

/** A count as a badge shows it, capped like the server's (§11.3). */
export function badge(n: number): string {
  return n >= 9999 ? "9999+" : String(n);
}
