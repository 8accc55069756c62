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
