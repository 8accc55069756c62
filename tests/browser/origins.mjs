// Scenario h: two origins of one server (127.0.0.1 and localhost) in one browser. Each
// origin's tabs share a poll of their own: a page never joins another origin's poll, so it
// is never given the packets of another origin's connectors.

import { BASE, check, demoLogin, metric, run, sharing, step, until } from "./lib.mjs";

const OTHER = BASE.replace("127.0.0.1", "localhost");

await run(60000, async (context) => {
  check(OTHER !== BASE, `two origins: ${BASE} and ${OTHER}`);
  step("two tabs of one origin, one of the other");
  const a1 = await demoLogin(context, `${BASE}/`, "guest", "guest");
  const a2 = await demoLogin(context, `${BASE}/`, "root", "root");
  const b = await demoLogin(context, `${OTHER}/`, "guest", "guest");
  await until("each origin counts only its own tabs", async () => {
    const [s1, s2, s3] = await Promise.all([a1, a2, b].map(sharing));
    return s1.tabs === 2 && s2.tabs === 2 && s3.tabs === 1 && s3.mode === "worker";
  });
  await until("two held polls: one per origin", async () => (await metric("pollgate_held_polls")) === 2);

  step("what each socket receives is its own connector's");
  // Every packet a socket is handed carries nothing addressed to another connector: a direct
  // message to b reaches b alone, one to a2 reaches a2 alone.
  const record = () => {
    window.direct = [];
    window.chat.ws.addEventListener("message", (e) => {
      const t = JSON.parse(e.data);
      if (t.type === "send") window.direct.push(t.data);
    });
    return window.chat.ws.sharing;
  };
  for (const page of [a1, a2, b]) await page.evaluate(record);
  const [a2Id, bId] = await Promise.all([a2, b].map((p) => p.evaluate(() => window.chat.me())));
  const direct = (to, data) =>
    a1.evaluate(
      ([targetId, d]) => window.chat.ws.send(JSON.stringify({ ns: "org.jwebsocket.plugins.system", type: "send", targetId, data: d })),
      [to, data],
    );
  check(await direct(bId, "for b"), "sent to b");
  check(await direct(a2Id, "for a2"), "sent to a2");
  await until("b and a2 got theirs", async () => {
    const [gotB, gotA2] = await Promise.all([b, a2].map((p) => p.evaluate(() => window.direct)));
    return gotB.includes("for b") && gotA2.includes("for a2");
  });
  await new Promise((r) => setTimeout(r, 300));
  const [gotA1, gotA2, gotB] = await Promise.all([a1, a2, b].map((p) => p.evaluate(() => window.direct)));
  check(JSON.stringify(gotB) === '["for b"]', `b got only its own: ${gotB}`);
  check(JSON.stringify(gotA2) === '["for a2"]', `a2 got only its own: ${gotA2}`);
  check(gotA1.length === 0, `a1 got none: ${gotA1}`);
});
