// Scenario c: the server goes away under an open page.
//
// 1. The server is restarted (killed, then started again on the same port, with no state):
//    the demo page's socket finds that the server no longer knows it and closes with code
//    4000, wasClean false and a reason saying so (after an `error` event); a new socket
//    on the new server works.
// 2. The server is killed for good: a socket with a 2 s retry budget fires `error`, then
//    `close` with code 1006, wasClean false and a reason; a message it could not deliver
//    resolves its send() promise with false.

import { BASE, check, control, demoLogin, run, step } from "./lib.mjs";

/** Records a socket's error/close events into window[name]. */
function recordEvents(name, ws) {
  const r = (window[name] = { events: [], close: null });
  ws.addEventListener("error", () => r.events.push("error"));
  ws.addEventListener("close", (e) => {
    r.events.push("close");
    r.close = { code: e.code, reason: e.reason, wasClean: e.wasClean, readyState: ws.readyState };
  });
}

await run(60000, async (context) => {
  const page = await demoLogin(context, `${BASE}/`, "guest", "guest");
  await page.evaluate(`window.recordEvents = ${recordEvents}; recordEvents("demo", window.chat.ws);`);

  step("restart the server");
  check((await control("restart")) === "restarted", "the server was restarted");
  await page.waitForFunction(() => window.demo.close !== null, null, { timeout: 20000 });
  const demo = await page.evaluate(() => window.demo);
  step(`demo socket: ${JSON.stringify(demo)}`);
  check(demo.close.code === 4000, `close code 4000: ${demo.close.code}`);
  check(demo.close.wasClean === false, "not clean");
  check(/no longer knows this connection/.test(demo.close.reason), `the reason says so: ${demo.close.reason}`);
  check(JSON.stringify(demo.events) === '["error","close"]', `error, then close: ${demo.events}`);
  check(demo.close.readyState === 3, "CLOSED");
  check((await page.textContent("#status")) === "closed (4000)", "the page shows the close");

  step("a new socket works on the new server");
  const welcome = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const ws = new PollgateSocket("/jWebSocket/http", { retryBudget: 2000 });
        recordEvents("short", ws);
        window.short.ws = ws;
        ws.onmessage = (e) => {
          if (JSON.parse(e.data).type === "welcome") resolve(JSON.parse(e.data).sourceId);
        };
        ws.onclose = () => resolve(null);
      }),
  );
  check(typeof welcome === "string" && welcome.length === 32, `welcomed: ${welcome}`);

  step("kill the server for good");
  check((await control("kill")) === "killed", "the server was killed");
  const pending = page.evaluate(() => {
    window.short.ws.send('{"ns":"org.jwebsocket.plugins.system","type":"echo","data":"lost"}');
    return window.short.ws.send('{"ns":"org.jwebsocket.plugins.system","type":"echo","data":"lost too"}');
  });
  await page.waitForFunction(() => window.short.close !== null, null, { timeout: 20000 });
  const short = await page.evaluate(() => ({ events: window.short.events, close: window.short.close }));
  step(`short-budget socket: ${JSON.stringify(short)}`);
  check(short.close.code === 1006, `close code 1006: ${short.close.code}`);
  check(short.close.wasClean === false, "not clean");
  check(/could not be reached/.test(short.close.reason), `the reason says so: ${short.close.reason}`);
  check(JSON.stringify(short.events) === '["error","close"]', `error, then close: ${short.events}`);
  check((await pending) === false, "an undelivered message resolves its send() with false");
});
