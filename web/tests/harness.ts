// A real confab-server process on 127.0.0.1:0 and a real Chromium, for the
// browser tests. The server's address is read from its "listening on"
// line, never guessed; every wait is on an event, with a timeout.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { type Browser, chromium } from "playwright-core";

/** The server binary: CONFAB_SERVER_BIN, or the workspace's debug build. */
function serverBin(): string {
  return process.env.CONFAB_SERVER_BIN ?? fileURLToPath(new URL("../../target/debug/confab-server", import.meta.url));
}

/** Chromium: CONFAB_CHROMIUM, or Debian's package. */
function chromiumBin(): string {
  return process.env.CONFAB_CHROMIUM ?? "/usr/bin/chromium";
}

export class Server {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly dataDir: string,
  ) {}

  /** Starts a server on a fresh data directory and a free port, or on
   * `dataDir` and `listen` (host:port) to restart one where it was. */
  static async start(dataDir?: string, listen = "127.0.0.1:0"): Promise<Server> {
    const dir = dataDir ?? mkdtempSync(join(tmpdir(), "confab-web-"));
    const child = spawn(serverBin(), ["--listen", listen, "--data-dir", dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const url = await new Promise<string>((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error("confab-server did not say where it listens within 30 s")), 30_000);
      child.once("exit", (code) => reject(new Error(`confab-server exited with ${code} before listening`)));
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        const found = /listening on (https?:\/\/\S+)/.exec(line);
        if (found) {
          clearTimeout(timer);
          resolvePromise(found[1]!);
        }
      });
    });
    return new Server(child, url, dir);
  }

  /** host:port it listens on. */
  get listen(): string {
    return new URL(this.url).host;
  }

  /** SIGKILLs the server; its data directory stays for a restart. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await exited;
  }

  /** Stops the server and deletes its data. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumBin(),
    headless: true,
    // CI runs as root in a container.
    args: ["--no-sandbox"],
  });
}
