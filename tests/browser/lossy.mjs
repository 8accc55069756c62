// Scenario b: order and exactly-once delivery while a proxy loses one response in five.
//
// A small HTTP proxy (loopback only) stands between the page and the server. It serves the
// test page itself and forwards everything else; of the endpoint's requests, every fifth of
// each action (send, sync, ...) is passed to the server, which processes it, and then its
// response is thrown away and the client's connection cut. Two sockets in the page, logged in as guest and root, each send
// the other 200 numbered messages at once; both must receive all 200 exactly once, in order.

import http from "node:http";
import { ADDR, check, run, step } from "./lib.mjs";

const N = 200;
const [HOST, PORT] = [ADDR.split(":")[0], Number(ADDR.split(":")[1])];

const PAGE = `<!doctype html><meta charset="utf-8"><title>lossy</title>
<script src="/pollgate.js"></script>
<script>
const SYSTEM = "org.jwebsocket.plugins.system";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A socket logged in as user: resolves once the login answer arrived. */
function client(user) {
  return new Promise((resolve) => {
    const c = { ws: new PollgateSocket("/jWebSocket/http"), id: null, got: [], closed: null };
    c.ws.onmessage = (e) => {
      const t = JSON.parse(e.data);
      if (t.type === "welcome") {
        c.id = t.sourceId;
        c.ws.send(JSON.stringify({ ns: SYSTEM, type: "login", username: user, password: user }));
      } else if (t.type === "response" && t.reqType === "login") {
        c.login = t.code;
        resolve(c);
      } else if (t.type === "send") {
        c.got.push(t.data);
      }
    };
    c.ws.onclose = (e) => { c.closed = { code: e.code, reason: e.reason }; resolve(c); };
  });
}
window.exchange = async (n) => {
  const [a, b] = await Promise.all([client("guest"), client("root")]);
  if (a.login !== 0 || b.login !== 0) return { error: "login failed", a: a.closed, b: b.closed };
  const token = (to, data) => JSON.stringify({ ns: SYSTEM, type: "send", targetId: to.id, responseRequested: false, data });
  const acks = [];
  for (let i = 0; i < n; i++) {
    acks.push(a.ws.send(token(b, "a" + i)));
    acks.push(b.ws.send(token(a, "b" + i)));
  }
  const bufferedAtStart = a.ws.bufferedAmount + b.ws.bufferedAmount;
  const acked = await Promise.all(acks);
  for (let k = 0; k < 400 && (a.got.length < n || b.got.length < n); k++) await sleep(100);
  await sleep(500); // anything more (a duplicate) would arrive now
  return {
    toA: a.got, toB: b.got, bufferedAtStart,
    allAcked: acked.every((x) => x === true),
    buffered: a.ws.bufferedAmount + b.ws.bufferedAmount,
    retries: a.ws.stats.retries + b.ws.stats.retries,
    closed: [a.closed, b.closed],
  };
};
</script>`;

/** Starts the lossy proxy; resolves with it once it listens. */
function startProxy() {
  const stats = { forwarded: 0, dropped: {} };
  const seen = {};
  const server = http.createServer((req, res) => {
    if (req.url === "/lossy.html") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", Connection: "close" });
      res.end(PAGE);
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      // Counted per action, so that syncs (far fewer than sends) lose one in five too.
      const action = new URLSearchParams(body.toString()).get("action") || "?";
      const endpoint = req.url.startsWith("/jWebSocket/http");
      seen[action] = (seen[action] || 0) + 1;
      const drop = endpoint && seen[action] % 5 === 0;
      const upstream = http.request(
        { host: HOST, port: PORT, method: req.method, path: req.url, headers: { ...req.headers, connection: "close" }, agent: false },
        (answer) => {
          const parts = [];
          answer.on("data", (c) => parts.push(c));
          answer.on("end", () => {
            if (drop) {
              // The server did the work; the client never learns it.
              stats.dropped[action] = (stats.dropped[action] || 0) + 1;
              req.socket.destroy();
              return;
            }
            stats.forwarded++;
            const headers = { ...answer.headers, connection: "close" };
            delete headers["transfer-encoding"];
            headers["content-length"] = String(Buffer.concat(parts).length);
            // Every answer closes its connection, so Chromium never silently re-sends a
            // request on a reused connection: the page's client sees each loss itself.
            res.writeHead(answer.statusCode, headers);
            res.end(Buffer.concat(parts));
          });
        },
      );
      upstream.on("error", () => req.socket.destroy());
      upstream.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, stats })));
}

await run(90000, async (context) => {
  const { server, stats } = await startProxy();
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/lossy.html`);
    step(`exchanging ${N} messages each way through the lossy proxy`);
    const r = await page.evaluate((n) => window.exchange(n), N);
    check(!r.error, `${r.error}: ${JSON.stringify(r)}`);
    step(`proxy dropped ${JSON.stringify(stats.dropped)}, forwarded ${stats.forwarded}; client retries ${r.retries}`);
    const expected = (p) => Array.from({ length: N }, (_, i) => p + i);
    const firstDiff = (got, want) => got.findIndex((x, i) => x !== want[i]);
    check(
      JSON.stringify(r.toB) === JSON.stringify(expected("a")),
      `b got ${r.toB.length} messages, first difference at ${firstDiff(r.toB, expected("a"))}`,
    );
    check(
      JSON.stringify(r.toA) === JSON.stringify(expected("b")),
      `a got ${r.toA.length} messages, first difference at ${firstDiff(r.toA, expected("b"))}`,
    );
    check(r.allAcked, "every send() promise resolved true");
    check(r.bufferedAtStart > 0 && r.buffered === 0, `bufferedAmount ${r.bufferedAtStart} at first, ${r.buffered} at the end`);
    check(r.closed.every((c) => c === null), `no socket closed: ${JSON.stringify(r.closed)}`);
    check((stats.dropped.send || 0) >= 40 && (stats.dropped.sync || 0) >= 2, `responses of sends and syncs were lost: ${JSON.stringify(stats.dropped)}`);
    check(r.retries >= (stats.dropped.send || 0), `the client retried every lost send (${r.retries} retries)`);
  } finally {
    server.close();
    server.closeAllConnections?.();
  }
});
