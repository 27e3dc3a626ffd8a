import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// The build is committed (dist/) and embedded in confab-server; CI rebuilds
// it from `npm ci` and fails on any difference, so it must be reproducible:
// no timestamps, content-hashed names only.
export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // No inline script anywhere: the server's CSP allows scripts from
    // 'self' only. Browsers that run the app support modulepreload.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: true,
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
