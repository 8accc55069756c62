// The admin page (static/admin.html): live counters from the metrics, the sessions table
// with a filter and paging, a close button; a screenshot is kept as
// target/test-artifacts/admin.png. The Rust side opened 12 sessions, one logged in as guest.

import { join } from "node:path";
import { BASE, check, control, run, step } from "./lib.mjs";

const TOKEN = "admin-token-for-browser-tests";
const FILE = join(process.env.POLLGATE_TEST_ARTIFACTS, "admin.png");

const text = (page, id) => page.textContent(`#${id}`);
const rows = (page) => page.locator("#sessions tr").count();

await run(60000, async (context) => {
  const page = await context.newPage();
  await page.goto(`${BASE}/admin.html`);
  step("the counters come from the metrics before any login");
  await page.waitForFunction(() => document.getElementById("c-connectors").textContent === "12");
  check((await text(page, "c-sessions")) === "12", "12 sessions counted");

  step("a wrong token is refused and said so");
  await page.fill("#token", "not-the-token-at-all");
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("401"));
  check((await rows(page)) === 0, "no session shown without the right token");

  step("the right token: the first page of sessions");
  await page.fill("#token", TOKEN);
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("status").textContent === "Connected.");
  await page.selectOption("#f-take", "10");
  await page.click("#apply");
  await page.waitForFunction(() => document.getElementById("page").textContent === "1–10 of 12");
  check((await rows(page)) === 10, "ten rows on the first page");
  check((await text(page, "total")) === "12", "the total");

  step("the next page");
  await page.click("#next");
  await page.waitForFunction(() => document.getElementById("page").textContent === "11–12 of 12");
  check((await rows(page)) === 2, "two rows on the second page");
  check(await page.isDisabled("#next"), "no page after the last");

  step("the user filter");
  await page.fill("#f-user", "guest");
  await page.click("#apply");
  await page.waitForFunction(() => document.getElementById("page").textContent === "1–1 of 1");
  const row = page.locator("#sessions tr").first();
  check((await row.locator("td").nth(1).textContent()) === "guest", "guest's session");

  step("closing guest's session from its row");
  await row.locator("button", { hasText: "Close" }).click();
  await page.waitForFunction(() => document.querySelector("#sessions tr td:nth-child(3)").textContent === "closed");
  const seen = await control("closed?");
  check(seen === "http.command.close admin", `guest's client was closed by the admin: ${seen}`);
  await page.waitForFunction(() => document.getElementById("c-connectors").textContent === "11");

  step(`screenshot to ${FILE}`);
  await page.fill("#f-user", "");
  await page.click("#apply");
  await page.waitForFunction(() => document.getElementById("page").textContent === "1–10 of 12");
  await page.screenshot({ path: FILE, fullPage: true });
});
