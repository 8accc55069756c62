// Shared helpers of the browser scenarios: headless Chromium through playwright-core, the
// server address from tests/browser.rs, a hard time limit, and a tiny control channel (a
// `CONTROL <what>` line on stdout, answered by one line on stdin) for steps only the Rust
// side can take, such as killing and restarting the server.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

/** `127.0.0.1:PORT` of the server under test. */
export const ADDR = process.env.POLLGATE_TEST_ADDR;
if (!ADDR) throw new Error("POLLGATE_TEST_ADDR is not set: run these scenarios through `cargo test --test browser`");
export const BASE = `http://${ADDR}`;

/** Fails the scenario (exit 1 with the message on stderr). */
export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Prints a progress line (the Rust test shows it when the scenario fails). */
export function step(text) {
  console.log(`step: ${text}`);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust side to do `what` and waits for its one-line answer. */
export async function control(what) {
  console.log(`CONTROL ${what}`);
  const { value, done } = await lines.next();
  check(!done, `no answer to CONTROL ${what}`);
  return value;
}

/**
 * Runs `scenario(context)` in a fresh headless Chromium (a new user-data-dir), within
 * `limitMs`; exits 0 on success, 1 with the error otherwise. Page errors and console errors
 * are printed to stderr.
 */
export async function run(limitMs, scenario) {
  const timer = setTimeout(() => {
    console.error(`scenario timed out after ${limitMs} ms`);
    process.exit(2);
  }, limitMs);
  const profile = mkdtempSync(join(tmpdir(), "pollgate-chromium-"));
  let context;
  let code = 0;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1100, height: 760 },
      timeout: 30000,
    });
    context.setDefaultTimeout(20000);
    context.on("page", watch);
    for (const page of context.pages()) watch(page);
    await scenario(context);
    console.log("scenario passed");
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    code = 1;
  } finally {
    clearTimeout(timer);
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  process.exit(code);
}

function watch(page) {
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  page.on("console", (m) => {
    // (Failed requests are expected where a scenario cuts connections: the client retries.)
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      console.error(`page console: ${m.text()}`);
    }
  });
}

/** Opens the demo page at `url`, logs in, and waits until the login shows. */
export async function demoLogin(context, url, user, password) {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").textContent === "open");
  await page.waitForSelector("#login:not([disabled])");
  await page.fill("#username", user);
  await page.fill("#password", password);
  await page.click("#login");
  await page.waitForFunction((u) => document.getElementById("me").textContent === `Logged in as ${u}.`, user);
  return page;
}

/** Waits until `page`'s online list shows `user`. */
export async function waitOnline(page, user) {
  await page.waitForSelector(`#users li[data-user="${user}"]`);
}

/** A sample of the server's metrics (`pollgate_held_polls`), read over HTTP from Node. */
export async function metric(name) {
  const text = await (await fetch(`${BASE}/jWebSocket/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  check(line, `no metric ${name}`);
  return Number(line.slice(name.length + 1));
}

/** Waits (a bounded while) until `probe()` returns true; fails with `what` otherwise. */
export async function until(what, probe, limitMs = 20000) {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    check(Date.now() - start < limitMs, `${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** How a demo page's poll is held, as the page shows it: `{mode, tabs}`. */
export async function sharing(page) {
  return page.evaluate(() => {
    const el = document.getElementById("sharing");
    return { mode: el.dataset.mode, tabs: Number(el.dataset.tabs) };
  });
}

/**
 * Records the `data` of every broadcast a demo page's socket receives into `window.heard`
 * (the sender's name with it), from now on.
 */
export async function recordBroadcasts(page) {
  await page.evaluate(() => {
    window.heard = [];
    window.chat.ws.addEventListener("message", (e) => {
      const t = JSON.parse(e.data);
      if (t.type === "broadcast") window.heard.push(String(t.data));
    });
  });
}

/** Checks that `heard` holds each of `expected` once, each sender's in the order sent. */
export function checkHeardOnceInOrder(label, heard, expected) {
  check(heard.length === expected.length, `${label}: ${heard.length} messages, expected ${expected.length}: ${heard}`);
  check(new Set(heard).size === heard.length, `${label}: a message came twice: ${heard}`);
  for (const m of expected) check(heard.includes(m), `${label}: ${m} is missing`);
  // Messages are `<sender>-<n>`: each sender's n rise.
  const last = new Map();
  for (const m of heard) {
    const at = m.lastIndexOf("-");
    const [sender, n] = [m.slice(0, at), Number(m.slice(at + 1))];
    check(!(last.get(sender) >= n), `${label}: ${m} out of order: ${heard}`);
    last.set(sender, n);
  }
}
