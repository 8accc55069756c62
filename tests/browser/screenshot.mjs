// Scenario d: a screenshot of the demo page in use (two users, a broadcast, direct messages),
// kept as target/test-artifacts/demo.png.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BASE, check, demoLogin, run, step, waitOnline } from "./lib.mjs";

const FILE = join(process.env.POLLGATE_TEST_ARTIFACTS, "demo.png");

await run(60000, async (context) => {
  const guest = await demoLogin(context, `${BASE}/`, "guest", "guest");
  const root = await demoLogin(context, `${BASE}/`, "root", "root");
  await waitOnline(guest, "root");
  const say = async (page, text, to) => {
    if (to) await page.click(`#users li[data-user="${to}"]`);
    await page.fill("#text", text);
    await page.click("#send");
    await page.waitForSelector(`#log li.mine[data-state="delivered"]:has-text("${text}")`);
  };
  await say(root, "Hello from root, everyone!");
  await say(guest, "Hi root, guest here.", "root");
  await say(root, "Welcome, guest. This went over plain HTTP.", "guest");
  await guest.waitForSelector('#log li.send:has-text("plain HTTP")');
  // root is still selected from guest's direct message
  check((await guest.getAttribute("#text", "placeholder")) === "Direct message to root", "root is selected");
  await guest.fill("#text", "Thanks! Typing a direct reply…");
  await guest.mouse.move(0, 0);
  step(`screenshot to ${FILE}`);
  await guest.screenshot({ path: FILE, fullPage: true });
  const png = readFileSync(FILE);
  check(png.subarray(1, 4).toString() === "PNG", "a PNG file");
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  check(width === 1100 && height >= 600, `the whole page: ${width}x${height}`);
});
