import { defineConfig } from "vitest/config";

// The browser tests: a real confab-server process and Debian's Chromium
// driven by playwright-core (tests/browser.test.ts). Slow, so apart from
// the unit tests; `npm run test:browser`.
export default defineConfig({
  test: {
    environment: "node",
    include: ["tests/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One server and one browser at a time on a 2-core machine.
    fileParallelism: false,
  },
});
