// Scenario e: the WebSocket interface, as jWebSocket.js and other WebSocket code use it.
// install() replaces window.WebSocket (the original stays reachable); a ws:// URL as
// jWebSocket.js builds it maps to the HTTP endpoint; constants, readyState, errors thrown,
// handlers and listeners, bufferedAmount, a clean close by the client and one by the server;
// and on the wire: every request a POST with the connection id in the header, never in a URL.
// Its sockets share a poll held by a SharedWorker; one with `share: false` polls alone.

import { BASE, check, run, step } from "./lib.mjs";

await run(60000, async (context) => {
  // A blank page of the server's origin that loads the classic script.
  await context.route(`${BASE}/blank.html`, (route) =>
    route.fulfill({ contentType: "text/html", body: '<!doctype html><script src="/pollgate.js"></script>' }),
  );
  const requests = [];
  context.on("request", (r) => {
    if (r.url().includes("/http")) requests.push({ url: r.url(), method: r.method(), headers: r.headers(), body: r.postData() || "" });
  });
  const page = await context.newPage();
  await page.goto(`${BASE}/blank.html`);

  const r = await page.evaluate(async () => {
    const out = {};
    const SYSTEM = "org.jwebsocket.plugins.system";
    const events = (ws, type) => new Promise((resolve) => ws.addEventListener(type, resolve, { once: true }));
    const map = (url, context) => {
      try {
        return PollgateSocket.endpointOf(url, context);
      } catch (e) {
        return e.name;
      }
    };
    out.mapped = [
      map("ws://h:8787/jWebSocket/jWebSocket?x=1"),
      map("wss://h/app/jWebSocket"),
      map("ws://h:1/jWebSocket/http?connectionId=abc"),
      map("http://h:2/ctx/http"),
      map("ws://h:8787/"),
      map("ws://h:8787/x/y", "/jWebSocket"),
      map("ftp://h/"),
    ];
    const native = window.WebSocket;
    const Installed = PollgateSocket.install({ retryBudget: 5000 });
    out.installed = window.WebSocket === Installed && PollgateSocket.NativeWebSocket === native && native !== Installed;
    out.constants = [WebSocket.CONNECTING, WebSocket.OPEN, WebSocket.CLOSING, WebSocket.CLOSED].join();

    const ws = new WebSocket(`ws://${location.host}/jWebSocket/jWebSocket?x=1`, "org.jwebsocket.json");
    out.isPollgate = ws instanceof PollgateSocket;
    out.endpoint = ws.endpoint;
    out.protocol = ws.protocol;
    out.first = [ws.readyState, ws.CLOSED];
    try {
      ws.send("too early");
    } catch (e) {
      out.earlySend = e.name;
    }
    const messages = [];
    const removed = [];
    const drop = () => removed.push(1);
    ws.addEventListener("message", drop);
    ws.removeEventListener("message", drop);
    ws.onmessage = (e) => messages.push(JSON.parse(e.data));
    await events(ws, "open");
    out.opened = ws.readyState;
    while (messages.length < 2) await new Promise((r) => setTimeout(r, 50));
    out.firstMessages = messages.slice(0, 2).map((m) => `${m.ns}/${m.type}/${m.name || ""}`);
    out.maxFrameSize = ws.maxFrameSize;
    // The page's sockets share a poll held by a SharedWorker; `share: false` polls alone.
    out.sharedMode = ws.sharing.mode;
    const solo = new PollgateSocket("/jWebSocket/http", { share: false });
    await events(solo, "open");
    out.soloMode = solo.sharing.mode;
    const soloClosed = events(solo, "close");
    solo.close();
    await soloClosed;

    const echo = ws.send(JSON.stringify({ ns: SYSTEM, type: "echo", data: "héllo" }));
    out.buffered = ws.bufferedAmount;
    out.echoAcked = await echo;
    out.bufferedAfter = ws.bufferedAmount;
    const reply = messages.find((m) => m.reqType === "echo");
    out.echo = reply && reply.data;
    out.removedCalled = removed.length;

    try {
      ws.close(1001);
    } catch (e) {
      out.badCode = e.name;
    }
    const closed = events(ws, "close");
    ws.close(1000, "bye");
    out.closing = ws.readyState;
    const c = await closed;
    out.clientClose = { code: c.code, reason: c.reason, wasClean: c.wasClean, state: ws.readyState };

    // The server closes a connection that sends the system `close` token.
    const other = new PollgateSocket("/jWebSocket/http");
    await events(other, "open");
    const serverClosed = events(other, "close");
    other.send(JSON.stringify({ ns: SYSTEM, type: "close" }));
    const s = await serverClosed;
    out.serverClose = { code: s.code, reason: s.reason, wasClean: s.wasClean };

    // close() while CONNECTING: CLOSING at once, then error and an unclean close, as a browser does.
    const early = new PollgateSocket("/jWebSocket/http");
    const seen = [];
    early.onerror = () => seen.push("error");
    const earlyClosed = events(early, "close");
    early.close();
    out.earlyState = early.readyState;
    const ec = await earlyClosed;
    out.earlyClose = { events: seen, code: ec.code, wasClean: ec.wasClean, state: early.readyState };

    PollgateSocket.uninstall();
    out.restored = window.WebSocket === native;
    return out;
  });
  step(JSON.stringify(r));
  const mapped = [
    "http://h:8787/jWebSocket/http",
    "https://h/app/http",
    "http://h:1/jWebSocket/http",
    "http://h:2/ctx/http",
    "http://h:8787/jWebSocket/http",
    "http://h:8787/jWebSocket/http",
    "SyntaxError",
  ];
  check(JSON.stringify(r.mapped) === JSON.stringify(mapped), `URL mapping: ${r.mapped}`);
  check(r.installed, "install() replaces window.WebSocket and keeps the original");
  check(r.constants === "0,1,2,3", `constants ${r.constants}`);
  check(r.isPollgate, "new WebSocket() makes a PollgateSocket");
  check(r.endpoint === `${BASE}/jWebSocket/http`, `ws:// maps to the endpoint: ${r.endpoint}`);
  check(r.protocol === "org.jwebsocket.json", `the sub-protocol: ${r.protocol}`);
  check(r.first.join() === "0,3", `CONNECTING at first: ${r.first}`);
  check(r.earlySend === "InvalidStateError", `send() while CONNECTING throws: ${r.earlySend}`);
  check(r.opened === 1, "OPEN after open");
  check(
    r.firstMessages.join() === "org.jwebsocket.msgctrl/info/maxFrameSize,org.jwebsocket.plugins.system/welcome/",
    `the frame-size message, then the welcome: ${r.firstMessages}`,
  );
  check(r.maxFrameSize === 1048840, `maxFrameSize ${r.maxFrameSize}`);
  check(r.sharedMode === "worker" && r.soloMode === "solo", `sharing: ${r.sharedMode}, with share false: ${r.soloMode}`);
  check(r.buffered > 40 && r.bufferedAfter === 0 && r.echoAcked === true, `bufferedAmount ${r.buffered} → ${r.bufferedAfter}`);
  check(r.echo === "héllo", `the echo came back: ${r.echo}`);
  check(r.removedCalled === 0, "a removed listener is not called");
  check(r.badCode === "InvalidAccessError", `close(1001) throws: ${r.badCode}`);
  check(r.closing === 2, "CLOSING right after close()");
  check(JSON.stringify(r.clientClose) === '{"code":1000,"reason":"bye","wasClean":true,"state":3}', "a clean client close");
  check(JSON.stringify(r.serverClose) === '{"code":1000,"reason":"client","wasClean":true}', "a clean server close");
  check(r.earlyState === 2, `CLOSING right after close() while CONNECTING: ${r.earlyState}`);
  check(
    JSON.stringify(r.earlyClose) === '{"events":["error"],"code":1006,"wasClean":false,"state":3}',
    `close() while CONNECTING fails the connection: ${JSON.stringify(r.earlyClose)}`,
  );
  check(r.restored, "uninstall() restores window.WebSocket");

  // The last socket's close request left the page before evaluate() returned, but the
  // browser may report it a moment later: wait (a bounded while) until it has been seen.
  const idCount = () => new Set(requests.map((q) => q.headers["x-pollgate-connection"])).size;
  for (let i = 0; i < 100 && idCount() < 4; i++) await new Promise((r) => setTimeout(r, 100));
  step(`${requests.length} endpoint requests`);
  check(requests.length >= 8, "requests were seen");
  const ids = new Set();
  for (const q of requests) {
    const id = q.headers["x-pollgate-connection"];
    check(q.method === "POST", `POST only: ${q.method} ${q.url}`);
    check(/^[0-9a-f]{32}$/.test(id || ""), "the connection id is in the X-Pollgate-Connection header");
    check(!new URL(q.url).search, `no query string: ${q.url}`);
    check(!/connectionId/.test(q.body), "no connectionId in the body");
    ids.add(id);
  }
  check(ids.size === 4, `four connections, four ids: ${ids.size}`);
  // The page's own requests: the shared poll's are the worker's; the solo socket's are here.
  check(requests.some((q) => /(^|&)action=sync(&|$)/.test(q.body)), "the socket with share: false polls itself");
  for (const q of requests) for (const id of ids) check(!q.url.includes(id) && !q.body.includes(id), "the id appears in no URL or body");
});
