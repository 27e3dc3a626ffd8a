// The browser app in a real Chromium against a real server (issue #14).

import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Server, launchBrowser } from "./harness";
import { SlowLink } from "./slowlink";

let server: Server;
let browser: Browser;

beforeAll(async () => {
  server = await Server.start();
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

const PASSWORD = "correct horse battery staple";

type Options = { width?: number; height?: number; bypassCSP?: boolean; url?: string };

/** A new browser context (its own storage) on the app at `options.url`
 * (the server by default). */
async function visit(options: Options): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({
    viewport: { width: options.width ?? 1100, height: options.height ?? 800 },
    bypassCSP: options.bypassCSP ?? false,
  });
  const page = await context.newPage();
  await page.goto(options.url ?? server.url);
  return { context, page };
}

/** A new browser context that registers `name` and logs in. */
async function person(name: string, options: Options = {}): Promise<{ context: BrowserContext; page: Page }> {
  const { context, page } = await visit(options);
  await page.getByRole("button", { name: "New here? Register" }).click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Register and log in" }).click();
  await page.getByRole("status").filter({ hasText: "online" }).waitFor();
  return { context, page };
}

/** Another browser (its own storage) where `name`, registered already, logs in. */
async function login(name: string, options: Options = {}): Promise<{ context: BrowserContext; page: Page }> {
  const { context, page } = await visit(options);
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("status").filter({ hasText: "online" }).waitFor();
  return { context, page };
}

/** The texts of the timeline's message lines, in order. */
async function texts(page: Page): Promise<string[]> {
  return page.locator(".timeline .line .text").allTextContents();
}

async function say(page: Page, text: string): Promise<void> {
  await page.getByLabel(/^Message #/).fill(text);
  await page.getByLabel(/^Message #/).press("Enter");
}

test("two people register, find a room, and chat both ways, each line once and in order", async () => {
  const alice = await person("alice");
  const bob = await person("bob");

  await alice.page.getByLabel("New room").fill("lobby");
  await alice.page.getByRole("button", { name: "Create" }).click();
  await alice.page.getByRole("heading", { name: "#lobby" }).waitFor();

  // Bob's rooms list shows it live; he filters, opens it, and joins.
  await bob.page.getByLabel("Filter rooms").fill("lob");
  await bob.page.getByRole("button", { name: /#lobby/ }).click();
  await bob.page.getByRole("heading", { name: "#lobby" }).waitFor();
  // Presence: alice is told in the room, and her member list shows him online.
  await alice.page.locator(".timeline .notice", { hasText: "bob joined #lobby" }).waitFor();
  await alice.page.getByRole("button", { name: "Members", exact: true }).click();
  const members = alice.page.getByRole("complementary", { name: "Members of #lobby" });
  await members.getByText("bob (online)").waitFor();

  await say(alice.page, "hi bob");
  await bob.page.locator(".timeline .line .text", { hasText: "hi bob" }).waitFor();
  await say(bob.page, "hi alice");
  await alice.page.locator(".timeline .line .text", { hasText: "hi alice" }).waitFor();
  await say(alice.page, "third");
  await bob.page.locator(".timeline .line.delivered .text", { hasText: "third" }).waitFor();
  await alice.page.locator(".timeline .line.delivered .text", { hasText: "third" }).waitFor();

  expect(await texts(alice.page)).toEqual(["hi bob", "hi alice", "third"]);
  expect(await texts(bob.page)).toEqual(["hi bob", "hi alice", "third"]);

  // Markup in a message is shown as its characters, never run or rendered.
  const injection = "<img src=x onerror=alert(1)>";
  let dialogs = 0;
  bob.page.on("dialog", () => (dialogs += 1));
  await say(alice.page, injection);
  await bob.page.locator(".timeline .line .text", { hasText: injection }).waitFor();
  expect(await bob.page.locator(".timeline img").count()).toBe(0);
  expect(dialogs).toBe(0);

  // Bob closes his browser: alice's member list shows him offline.
  await bob.context.close();
  await members.getByText("bob", { exact: true }).waitFor();
  await alice.context.close();
});

/** Alice and bob (fresh names, `alice_<suffix>`) in a fresh room of their
 * own, both looking at it; alice's browser reaches the app at `aliceUrl`. */
async function pair(
  room: string,
  { suffix = Math.random().toString(36).slice(2, 8), aliceUrl }: { suffix?: string; aliceUrl?: string } = {},
): Promise<{ alice: Awaited<ReturnType<typeof person>>; bob: Awaited<ReturnType<typeof person>> }> {
  const alice = await person(`alice_${suffix}`, { url: aliceUrl });
  const bob = await person(`bob_${suffix}`);
  await alice.page.getByLabel("New room").fill(room);
  await alice.page.getByRole("button", { name: "Create" }).click();
  await alice.page.getByRole("heading", { name: `#${room}` }).waitFor();
  await bob.page.getByRole("button", { name: new RegExp(`#${room}`) }).click();
  await bob.page.getByRole("heading", { name: `#${room}` }).waitFor();
  return { alice, bob };
}

test("edit, reply, react and delete from a message's menu, seen alike on both sides (issue #16)", async () => {
  const { alice, bob } = await pair(`rel${Date.now() % 100000}`);
  await say(alice.page, "meet at 5");
  await bob.page.locator(".timeline .line .text", { hasText: "meet at 5" }).waitFor();
  // The message is #1 of the room: found by its seq whatever its text.
  const aliceLine = alice.page.locator('.timeline .line[data-seq="1"]');

  // Edit: the menu puts the text in the composer; Enter sends the edit.
  await aliceLine.getByRole("button", { name: /^Actions for message/ }).click();
  await aliceLine.getByRole("button", { name: "Edit" }).click();
  await alice.page.getByText("Editing your message").waitFor();
  await alice.page.getByLabel(/^Message #/).fill("meet at 6");
  await alice.page.getByLabel(/^Message #/).press("Enter");
  const bobLine = bob.page.locator('.timeline .line[data-seq="1"]');
  await bobLine.locator(".edited").waitFor();
  expect(await texts(bob.page)).toEqual(["meet at 6"]);

  // React from the menu; the chip counts and toggles.
  await bobLine.getByRole("button", { name: /^Actions for message/ }).click();
  await bobLine.getByRole("button", { name: "React 👍" }).click();
  await alice.page.locator(".timeline .line .reaction", { hasText: "👍 1" }).waitFor();
  await alice.page.locator(".timeline .line .reaction", { hasText: "👍 1" }).click();
  await bob.page.locator(".timeline .line .reaction", { hasText: "👍 2" }).waitFor();
  await bob.page.locator(".timeline .line .reaction", { hasText: "👍 2" }).click();
  await alice.page.locator(".timeline .line .reaction.mine", { hasText: "👍 1" }).waitFor();

  // Reply: the server quotes the text as it stands.
  await bobLine.getByRole("button", { name: /^Actions for message/ }).click();
  await bobLine.getByRole("button", { name: "Reply" }).click();
  await bob.page.getByText(/^Replying to alice_/).waitFor();
  await say(bob.page, "see you then");
  const reply = alice.page.locator(".timeline .line", { hasText: "see you then" });
  await reply.locator(".quote", { hasText: "meet at 6" }).waitFor();

  // Delete takes a second click; then the text is gone on both sides,
  // the reply's quote too, and only the author is offered it.
  await expect(bobLine.getByRole("button", { name: "Delete" }).count()).resolves.toBe(0);
  await aliceLine.getByRole("button", { name: /^Actions for message/ }).click();
  await aliceLine.getByRole("button", { name: "Delete" }).click();
  await aliceLine.getByRole("button", { name: "Delete for everyone" }).click();
  await bob.page.locator(".timeline .line .deleted").waitFor();
  await bob.page.locator(".timeline .line .quote em", { hasText: "message deleted" }).waitFor();
  for (const page of [alice.page, bob.page]) {
    expect(await texts(page)).toEqual(["message deleted", "see you then"]);
    expect(await page.locator(".timeline").textContent()).not.toContain("meet at");
  }
  // A reload reads the same state from history.
  await bob.page.reload();
  await bob.page.getByRole("button", { name: new RegExp(`#rel`) }).first().click();
  await bob.page.locator(".timeline .line .deleted").waitFor();
  expect(await texts(bob.page)).toEqual(["message deleted", "see you then"]);
  expect(await bob.page.locator(".timeline").textContent()).not.toContain("meet at");
  await alice.context.close();
  await bob.context.close();
});

test("messages typed offline show pending and are delivered once when back online", async () => {
  const { alice, bob } = await pair(`offline${Date.now() % 100000}`);
  await alice.context.setOffline(true);
  // The banner says the app knows it is offline; typing is allowed
  // meanwhile and the lines wait in the outbox.
  await alice.page.locator(".banner").waitFor();
  await say(alice.page, "written offline 1");
  await say(alice.page, "written offline 2");
  await alice.page.locator(".timeline .line.pending .text", { hasText: "written offline 2" }).waitFor();
  expect(await alice.page.locator(".timeline .line.pending").count()).toBe(2);

  await alice.context.setOffline(false);
  await alice.page.locator(".timeline .line.delivered .text", { hasText: "written offline 2" }).waitFor({ timeout: 45_000 });
  await bob.page.locator(".timeline .line .text", { hasText: "written offline 2" }).waitFor({ timeout: 45_000 });
  expect(await texts(alice.page)).toEqual(["written offline 1", "written offline 2"]);
  expect(await texts(bob.page)).toEqual(["written offline 1", "written offline 2"]);
  await alice.context.close();
  await bob.context.close();
});

test("a server restart mid-conversation loses nothing and shows nothing twice", async () => {
  const { alice, bob } = await pair(`restart${Date.now() % 100000}`);
  await say(alice.page, "before the restart");
  await bob.page.locator(".timeline .line .text", { hasText: "before the restart" }).waitFor();

  await server.kill();
  await alice.page.locator(".banner").waitFor();
  await say(alice.page, "while it was down");
  // Back on the same address: the pages reconnect by themselves.
  server = await Server.start(server.dataDir, server.listen);
  await alice.page.locator(".timeline .line.delivered .text", { hasText: "while it was down" }).waitFor({ timeout: 45_000 });
  await say(bob.page, "after the restart");
  await alice.page.locator(".timeline .line .text", { hasText: "after the restart" }).waitFor();
  const want = ["before the restart", "while it was down", "after the restart"];
  expect(await texts(alice.page)).toEqual(want);
  await bob.page.locator(".timeline .line .text", { hasText: "after the restart" }).waitFor();
  expect(await texts(bob.page)).toEqual(want);
  await alice.context.close();
  await bob.context.close();
});

test("a reload keeps the login, the rooms and the unread counts", async () => {
  const { alice, bob } = await pair(`reload${Date.now() % 100000}`);
  const room = (await bob.page.getByRole("heading", { level: 2 }).last().textContent())!.slice(1);
  // Bob looks at another room while alice writes, one line naming him.
  await bob.page.getByLabel("New room").fill(`elsewhere${Date.now() % 100000}`);
  await bob.page.getByRole("button", { name: "Create" }).click();
  await bob.page.getByRole("heading", { name: /#elsewhere/ }).waitFor();
  const bobName = (await bob.page.locator(".topbar .me").textContent())!;
  await say(alice.page, "one for later");
  await say(alice.page, `and @${bobName} look`);
  const badge = bob.page.getByRole("button", { name: new RegExp(`#${room}`) }).locator(".badge");
  await expect.poll(() => badge.textContent()).toBe("2 @1");

  await bob.page.reload();
  await bob.page.getByRole("status").filter({ hasText: "online" }).waitFor();
  expect(await bob.page.locator(".topbar .me").textContent()).toBe(bobName);
  await expect.poll(() => badge.textContent()).toBe("2 @1");
  // Opening it reads it: the marker shows where the new lines start.
  await bob.page.getByRole("button", { name: new RegExp(`#${room}`) }).click();
  await bob.page.locator(".unread-marker").waitFor();
  await expect.poll(() => badge.count()).toBe(0);
  await alice.context.close();
  await bob.context.close();
});

test("the login screen says what the server refused, and logout forgets the login", async () => {
  const name = `dave_${Math.random().toString(36).slice(2, 8)}`;
  const { context, page } = await person(name);
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("button", { name: "Log in" }).waitFor();
  await page.reload();
  await page.getByRole("button", { name: "Log in" }).waitFor();
  const alert = page.locator(".login [role=alert]");

  await page.getByRole("button", { name: "New here? Register" }).click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Register and log in" }).click();
  await expect.poll(() => alert.textContent()).toBe("that username is taken; choose another");
  await page.getByLabel("Username").fill(`${name}_2`);
  await page.getByLabel("Password").fill("password");
  await page.getByRole("button", { name: "Register and log in" }).click();
  await expect.poll(() => alert.textContent()).toMatch(/password/);

  // Wrong passwords: refused alike, then throttled with the wait in seconds
  // and the button held until it has passed.
  await page.getByRole("button", { name: "I have an account: log in" }).click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill("not the password at all");
  const submit = page.getByRole("button", { name: "Log in" });
  const statuses: number[] = [];
  while (!statuses.includes(429) && statuses.length < 12) {
    const [response] = await Promise.all([page.waitForResponse("**/v1/login"), submit.click()]);
    statuses.push(response.status());
    if (response.status() !== 429) await expect.poll(() => submit.isEnabled()).toBe(true);
  }
  expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
  expect(statuses.at(-1)).toBe(429);
  await expect.poll(() => alert.textContent()).toMatch(/^too many failed logins for this username; try again in \d+ s$/);
  expect(await submit.isDisabled()).toBe(true);
  await expect.poll(() => submit.isEnabled(), { timeout: 70_000 }).toBe(true);
  await page.getByLabel("Password").fill(PASSWORD);
  await submit.click();
  await page.getByRole("status").filter({ hasText: "online" }).waitFor();
  await context.close();
});

test("scroll-back loads older pages, First unread finds the marker above them, typing shows", async () => {
  const { alice, bob } = await pair(`long${Date.now() % 100000}`);
  const room = (await bob.page.getByRole("heading", { level: 2 }).last().textContent())!.slice(1);
  // Typing is shown to the others in the room, and ends with the line.
  await alice.page.getByLabel(/^Message #/).fill("draft…");
  await bob.page.locator(".typing", { hasText: "is typing" }).waitFor();
  await alice.page.getByLabel(/^Message #/).fill("");

  // 60 lines bob reads, then 70 he misses (one page is 50; sends beyond the
  // burst wait out RATE_LIMITED in the outbox).
  const lines = Array.from({ length: 130 }, (_, i) => `line ${i + 1}`);
  for (const line of lines.slice(0, 60)) await say(alice.page, line);
  await bob.page.locator(".timeline .line .text", { hasText: /^line 60$/ }).waitFor({ timeout: 45_000 });
  await bob.page.getByLabel("New room").fill(`away${room}`);
  await bob.page.getByRole("button", { name: "Create" }).click();
  await bob.page.getByRole("heading", { name: `#away${room}` }).waitFor();
  for (const line of lines.slice(60)) await say(alice.page, line);
  await alice.page.locator(".timeline .line.delivered .text", { hasText: /^line 130$/ }).waitFor({ timeout: 60_000 });

  await bob.page.getByRole("button", { name: new RegExp(`^#${room}`) }).click();
  await bob.page.locator(".timeline .line .text", { hasText: /^line 130$/ }).waitFor();
  // The newest page holds no line he read: no marker yet, the jump loads.
  expect(await bob.page.locator(".unread-marker").count()).toBe(0);
  await bob.page.getByRole("button", { name: "First unread" }).click();
  const marker = bob.page.locator(".unread-marker");
  await marker.waitFor();
  await expect.poll(() => marker.isVisible()).toBe(true);
  await expect
    .poll(() => bob.page.evaluate(() => document.querySelector(".unread-marker + li .text")?.textContent))
    .toBe("line 61");

  // Scrolled to the top, the rest loads, down to the room's start.
  const timeline = bob.page.locator(".timeline");
  await expect
    .poll(async () => {
      await timeline.evaluate((el) => el.scrollTo({ top: 0 }));
      return bob.page.locator(".timeline .start").count();
    })
    .toBe(1);
  expect(await texts(bob.page)).toEqual(lines);
  // Grouped by sender: a name per day and after the marker, not per line.
  const days = await bob.page.locator(".timeline .day").count();
  expect(await bob.page.locator(".timeline .sender").count()).toBe(days + 1);
  await alice.context.close();
  await bob.context.close();
});

/** Records every text the top bar's connection status shows from now on. */
async function watchStatus(page: Page): Promise<void> {
  await page.evaluate(() => {
    const status = document.querySelector(".topbar [role=status]")!;
    const seen: string[] = [status.textContent ?? ""];
    (globalThis as unknown as { statusSeen: string[] }).statusSeen = seen;
    new MutationObserver(() => seen.push(status.textContent ?? "")).observe(status, {
      subtree: true,
      childList: true,
      characterData: true,
    });
  });
}

async function statusSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => (globalThis as unknown as { statusSeen: string[] }).statusSeen);
}

test("over a slow link every line arrives once and in order, with no false reconnect", async () => {
  // 300 ms each way, in 256-byte pieces: a congested phone link.
  const link = await SlowLink.start(server.url, 300);
  const { alice, bob } = await pair(`slow${Date.now() % 100000}`, { aliceUrl: link.url });
  await watchStatus(alice.page);

  // Both type without waiting for each other, faster than the link's round trip.
  for (let i = 1; i <= 5; i++) {
    await say(alice.page, `from alice ${i}`);
    await say(bob.page, `from bob ${i}`);
  }
  for (const { page } of [alice, bob]) {
    await expect.poll(() => page.locator(".timeline .line.delivered:not(.notice) .text").count(), { timeout: 45_000 }).toBe(10);
    expect(await page.locator(".timeline .line.pending, .timeline .line.failed").count()).toBe(0);
  }
  const seenByAlice = await texts(alice.page);
  expect(await texts(bob.page)).toEqual(seenByAlice);
  // Each one's own lines in the order they were typed.
  for (const who of ["alice", "bob"]) {
    expect(seenByAlice.filter((t) => t.startsWith(`from ${who}`))).toEqual([1, 2, 3, 4, 5].map((i) => `from ${who} ${i}`));
  }
  // A slow link is not a dead one: the app never thought it was cut.
  expect((await statusSeen(alice.page)).filter((s) => !s.includes("online"))).toEqual([]);
  await alice.context.close();
  await bob.context.close();
  await link.stop();
});

test("a refused send fails visibly, and Retry or Edit sends it once", async () => {
  const suffix = Math.random().toString(36).slice(2, 8);
  const name = `alice_${suffix}`;
  const room = `retry${suffix}`;
  const { alice, bob } = await pair(room, { suffix });

  // Alice writes offline in one browser while, in another, she leaves the
  // room: back online, the server refuses the send (NOT_A_MEMBER).
  await alice.context.setOffline(true);
  await alice.page.locator(".banner").waitFor();
  await say(alice.page, "written before I left");
  await alice.page.locator(".timeline .line.pending .text", { hasText: "written before I left" }).waitFor();
  const elsewhere = await login(name);
  await elsewhere.page.getByRole("button", { name: new RegExp(`#${room}`) }).click();
  await elsewhere.page.getByRole("heading", { name: `#${room}` }).waitFor();
  await say(elsewhere.page, "/leave");
  await bob.page.locator(".timeline .notice", { hasText: `${name} left #${room}` }).waitFor();
  await alice.context.setOffline(false);
  // Out of the room, she is told where the line waits.
  await alice.page.getByRole("alert").filter({ hasText: `a message to #${room} was not sent` }).waitFor({ timeout: 45_000 });

  // She joins again, finds the line failed, and retries it: delivered once.
  await alice.page.getByRole("button", { name: new RegExp(`#${room}`) }).click();
  await alice.page.getByRole("heading", { name: `#${room}` }).waitFor();
  const failed = alice.page.locator(".timeline .line.failed", { hasText: "written before I left" });
  await failed.waitFor();
  await failed.getByRole("button", { name: "Retry" }).click();
  await alice.page.locator(".timeline .line.delivered .text", { hasText: "written before I left" }).waitFor();
  await bob.page.locator(".timeline .line .text", { hasText: "written before I left" }).waitFor();

  // Too long for the server's limit: refused before it leaves, and Edit
  // puts it back in the composer to shorten.
  await say(alice.page, `long ${"x".repeat(5000)}`);
  const tooLong = alice.page.locator(".timeline .line.failed", { hasText: "long xxx" });
  await tooLong.getByRole("button", { name: "Edit" }).click();
  const composer = alice.page.getByLabel(/^Message #/);
  expect((await composer.inputValue()).length).toBe(5005);
  expect(await tooLong.count()).toBe(0);
  await composer.fill("long story short");
  await composer.press("Enter");
  await alice.page.locator(".timeline .line.delivered .text", { hasText: "long story short" }).waitFor();
  await bob.page.locator(".timeline .line .text", { hasText: "long story short" }).waitFor();

  const want = ["written before I left", "long story short"];
  expect(await texts(alice.page)).toEqual(want);
  expect(await texts(bob.page)).toEqual(want);
  for (const p of [alice, bob, elsewhere]) await p.context.close();
});

/** Makes the page report itself hidden or shown, as a background tab does. */
async function setHidden(page: Page, hidden: boolean): Promise<void> {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

test("commands, keyboard navigation, kept drafts and the unread count in the title", async () => {
  const { alice, bob } = await pair(`keys${Date.now() % 100000}`);
  const room = (await alice.page.getByRole("heading", { level: 2 }).last().textContent())!.slice(1);
  const composer = alice.page.getByLabel(/^Message #/);

  // An unknown command is refused and stays in the composer; "//" escapes.
  await say(alice.page, "/nick zed");
  await alice.page.getByRole("alert").filter({ hasText: "unknown command /nick" }).waitFor();
  expect(await composer.inputValue()).toBe("/nick zed");
  await composer.fill("");
  await say(alice.page, "//etc/hosts is a path");
  await bob.page.locator(".timeline .line .text", { hasText: "/etc/hosts is a path" }).waitFor();
  await say(alice.page, "/help");
  await alice.page.getByRole("alert").filter({ hasText: "/me" }).waitFor();

  // A draft survives a reload.
  await composer.fill("half a thought");
  await alice.page.reload();
  await alice.page.getByRole("status").filter({ hasText: "online" }).waitFor();
  await expect.poll(() => alice.page.getByLabel(/^Message #/).inputValue()).toBe("half a thought");

  // Ctrl+K finds a room by name; Alt+Down moves to the next joined one.
  await bob.page.getByLabel("New room").fill(`other${room}`);
  await bob.page.getByRole("button", { name: "Create" }).click();
  await bob.page.getByRole("heading", { name: `#other${room}` }).waitFor();
  await bob.page.keyboard.press("Control+k");
  await bob.page.keyboard.type(room);
  await bob.page.keyboard.press("Enter");
  await bob.page.getByRole("heading", { name: `#${room}`, exact: true }).waitFor();
  await bob.page.keyboard.press("Alt+ArrowDown");
  await bob.page.getByRole("heading", { name: `#other${room}` }).waitFor();
  await bob.page.keyboard.press("Alt+ArrowDown");
  await bob.page.getByRole("heading", { name: `#${room}`, exact: true }).waitFor();

  // A hidden tab reads nothing: the title counts what arrives meanwhile,
  // and showing the tab reads it.
  await setHidden(bob.page, true);
  await say(alice.page, "while you were away");
  await bob.page.locator(".timeline .line .text", { hasText: "while you were away" }).waitFor();
  await expect.poll(() => bob.page.title()).toBe("(1) Confab");
  await setHidden(bob.page, false);
  await expect.poll(() => bob.page.title()).toBe("Confab");
  // Reloaded in the background, only lines after what was seen count.
  await bob.context.addInitScript(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  });
  await bob.page.reload();
  await bob.page.getByRole("status").filter({ hasText: "online" }).waitFor();
  await bob.page.getByRole("heading", { name: `#${room}`, exact: true }).waitFor();
  await say(alice.page, "and one more");
  await bob.page.locator(".timeline .line .text", { hasText: "and one more" }).waitFor();
  await expect.poll(() => bob.page.title()).toBe("(1) Confab");
  await alice.context.close();
  await bob.context.close();
});

const require = createRequire(import.meta.url);
const SHOTS = fileURLToPath(new URL("../screenshots/", import.meta.url));

/** axe-core's serious and critical violations on the page as it is now. */
async function accessibilityProblems(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run: () => Promise<{ violations: { id: string; impact: string; help: string }[] }> } }).axe;
    return (await axe.run()).violations;
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help}`);
}

for (const [label, width, height] of [
  ["phone", 375, 740],
  ["desktop", 1280, 800],
] as const) {
  test(`each screen passes axe and is photographed at ${label} width`, async () => {
    mkdirSync(SHOTS, { recursive: true });
    // axe is injected as a script, which the app's policy would refuse.
    const context = await browser.newContext({ viewport: { width, height }, bypassCSP: true });
    const page = await context.newPage();
    await page.goto(server.url);
    await page.getByRole("button", { name: "Log in" }).waitFor();
    expect(await accessibilityProblems(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}login-${label}.png` });

    const suffix = Math.random().toString(36).slice(2, 8);
    await page.getByRole("button", { name: "New here? Register" }).click();
    await page.getByLabel("Username").fill(`carol_${suffix}`);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Register and log in" }).click();
    await page.getByRole("status").filter({ hasText: "online" }).waitFor();
    await page.getByLabel("New room").fill(`tour${label}`);
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("heading", { name: `#tour${label}` }).waitFor();
    await say(page, "Hello! This is the chat view.");
    await say(page, "/me waves");
    await page.locator(".timeline .line.delivered .text", { hasText: "waves" }).waitFor();
    expect(await accessibilityProblems(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}chat-${label}.png` });

    if (label === "phone") await page.getByRole("button", { name: "Back to rooms" }).click();
    await page.getByRole("navigation", { name: "Rooms" }).waitFor();
    expect(await accessibilityProblems(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}rooms-${label}.png` });
    await context.close();
  });
}
