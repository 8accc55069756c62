// Scenario g: a browser without SharedWorker (removed before any script runs), where the
// tabs elect a leader with the Web Locks API (its requests are granted in order: the first
// tab leads, then the second...). Four tabs share the leader's poll; while the third sends a
// stream of numbered broadcasts, the leader's tab is closed, then the next leader's tab
// crashes, each while hand-overs are on their way: each time another tab takes the poll over,
// and the two tabs left receive every message once and in order.

import { BASE, check, checkHeardOnceInOrder, demoLogin, metric, recordBroadcasts, run, sharing, step, until } from "./lib.mjs";

const N = 90;

await run(90000, async (context) => {
  await context.addInitScript(() => {
    delete window.SharedWorker;
    // Hand-overs reach the tabs late, as they may from a busy leader: the close and the crash
    // below catch some of them in flight, and the next leader must deliver those again.
    const post = BroadcastChannel.prototype.postMessage;
    BroadcastChannel.prototype.postMessage = function (m) {
      if (m && m.message && m.message.type === "poll") setTimeout(() => post.call(this, m), 300);
      else post.call(this, m);
    };
  });
  step("four tabs open the demo");
  const tabs = [];
  for (const user of ["guest", "root", "guest", "root"]) tabs.push(await demoLogin(context, `${BASE}/`, user, user));
  await until("the first tab leads, four tabs on its poll", async () => {
    const shown = await Promise.all(tabs.map(sharing));
    return shown.map((s) => s.mode).join() === "leader,follower,follower,follower" && shown.every((s) => s.tabs === 4);
  });
  await until("one held poll", async () => (await metric("pollgate_held_polls")) === 1);
  const [first, second, sender, other] = tabs;
  for (const tab of [sender, other]) await recordBroadcasts(tab);
  const heard = () => other.evaluate(() => window.heard.length);

  step(`the third tab broadcasts ${N} numbered messages`);
  const sent = sender.evaluate(async (n) => {
    const ws = window.chat.ws;
    const acks = [];
    for (let i = 0; i < n; i++) {
      const t = { ns: "org.jwebsocket.plugins.system", type: "broadcast", senderIncluded: true, data: `s-${i}` };
      acks.push(ws.send(JSON.stringify(t)));
      await new Promise((r) => setTimeout(r, 30));
    }
    return (await Promise.all(acks)).every(Boolean);
  }, N);

  await until("the stream has begun", async () => (await heard()) >= 10);
  step("the leader's tab closes");
  let at = Date.now();
  await first.close();
  await until("the second tab took the poll over", async () => (await sharing(second)).mode === "leader");
  step(`a new leader ${Date.now() - at} ms after the close`);

  await until("the stream goes on", async () => (await heard()) >= 40);
  step("the new leader's tab crashes");
  at = Date.now();
  const cdp = await context.newCDPSession(second);
  cdp.send("Page.crash").catch(() => {}); // not awaited: it dies with the page
  await until("a third leader", async () => {
    const now = await Promise.all([sender, other].map(sharing));
    return now.some((s) => s.mode === "leader") && now.every((s) => s.tabs === 2);
  });
  step(`a new leader ${Date.now() - at} ms after the crash`);
  check(await sent, "every broadcast was acknowledged");

  const expected = Array.from({ length: N }, (_, i) => `s-${i}`);
  for (const [label, tab] of [["sender", sender], ["other", other]]) {
    await until(`${label} heard all ${N}`, async () => (await tab.evaluate(() => window.heard.length)) >= N);
    await new Promise((r) => setTimeout(r, 300));
    checkHeardOnceInOrder(label, await tab.evaluate(() => window.heard), expected);
  }
  // The crashed tab's connector is closed by the new leader; the closed tab closed its own.
  await until("one held poll for the two connectors left", async () => {
    return (await metric("pollgate_held_polls")) === 1 && (await metric("pollgate_connectors")) === 2;
  });
  for (const tab of [sender, other]) check((await tab.textContent("#status")) === "open", "the tabs left stay open");
});
