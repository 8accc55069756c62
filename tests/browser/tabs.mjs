// Scenario f: ten tabs of one origin chat through the demo page while one poll, held by a
// SharedWorker, waits for all of them: the server's metrics show one held poll, every tab
// receives every message once and in order, and tabs that go away (closed, or crashed) close
// only their own connector.

import {
  BASE,
  check,
  checkHeardOnceInOrder,
  demoLogin,
  metric,
  recordBroadcasts,
  run,
  sharing,
  step,
  until,
} from "./lib.mjs";

const TABS = 10;
const EACH = 3;

await run(110000, async (context) => {
  step(`${TABS} tabs open the demo and log in`);
  const tabs = [];
  for (let i = 0; i < TABS; i++) {
    const user = i % 2 ? "root" : "guest";
    tabs.push(await demoLogin(context, `${BASE}/`, user, user));
  }
  for (const tab of tabs) await recordBroadcasts(tab);

  step("they share one poll");
  await until("every tab shows ten tabs on a shared worker's poll", async () => {
    const shown = await Promise.all(tabs.map(sharing));
    return shown.every((s) => s.mode === "worker" && s.tabs === TABS);
  });
  await until("the server holds one poll for the ten connectors", async () => {
    return (await metric("pollgate_connectors")) === TABS && (await metric("pollgate_held_polls")) === 1;
  });

  step(`each tab sends ${EACH} messages through the page`);
  for (let k = 0; k < EACH; k++) {
    for (let i = 0; i < TABS; i++) {
      await tabs[i].fill("#text", `tab${i}-${k}`);
      await tabs[i].click("#send");
    }
  }
  for (let i = 0; i < TABS; i++) {
    await tabs[i].waitForSelector(`#log li.mine[data-state="delivered"]:has-text("tab${i}-${EACH - 1}")`);
  }
  // The demo broadcasts without the sender: each tab hears the other nine.
  for (let i = 0; i < TABS; i++) {
    const expected = [];
    for (let j = 0; j < TABS; j++) for (let k = 0; k < EACH; k++) if (j !== i) expected.push(`tab${j}-${k}`);
    await until(`tab ${i} heard every message`, async () => (await tabs[i].evaluate(() => window.heard.length)) >= expected.length);
    // A moment for any copy to arrive, then exactly once each.
    await new Promise((r) => setTimeout(r, 300));
    checkHeardOnceInOrder(`tab ${i}`, await tabs[i].evaluate(() => window.heard), expected);
  }
  check((await metric("pollgate_held_polls")) <= 1, "still one held poll at most");

  step("one tab is closed and one crashes: each closes only its own connector");
  await tabs[9].close();
  step("tab 9 closed; tab 8 crashes");
  const cdp = await context.newCDPSession(tabs[8]);
  // Not awaited: the call dies with the page, and may never answer.
  cdp.send("Page.crash").catch(() => {});
  const left = tabs.slice(0, 8);
  await until("the server has eight connectors", async () => (await metric("pollgate_connectors")) === 8, 30000);
  await until("the others show eight tabs", async () => {
    const shown = await Promise.all(left.map(sharing));
    return shown.every((s) => s.mode === "worker" && s.tabs === 8);
  });
  await until("one held poll again", async () => (await metric("pollgate_held_polls")) === 1);
  for (const tab of left) {
    check((await tab.textContent("#status")) === "open", "the other tabs stay open");
  }

  step("the eight left go on chatting");
  for (const tab of left) await tab.evaluate(() => (window.heard = []));
  await left[0].fill("#text", "after-0");
  await left[0].click("#send");
  for (let i = 1; i < left.length; i++) {
    await until(`tab ${i} heard the message after the closes`, async () => (await left[i].evaluate(() => window.heard.length)) >= 1);
    checkHeardOnceInOrder(`tab ${i} after`, await left[i].evaluate(() => window.heard), ["after-0"]);
  }
});
