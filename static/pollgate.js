/*! pollgate.js: the browser WebSocket interface over pollgate's long-polling HTTP protocol.
 *
 * A classic script (no build step): it defines `window.PollgateSocket`. `pollgate.mjs`
 * imports this file for its side effect and re-exports the class, so there is one source.
 *
 *   const ws = new PollgateSocket("http://localhost:8787/jWebSocket/http");
 *   ws.onmessage = (e) => console.log(e.data);
 *   ws.onopen = () => ws.send('{"ns":"org.jwebsocket.plugins.system","type":"echo","data":"hi"}');
 *
 * How it speaks to the server (docs/PROTOCOL.md, "Writing a client"):
 * - a 128-bit random connection id travels in the `X-Pollgate-Connection` header, never in a
 *   URL; every action is a form POST;
 * - `open`, then one long-poll `sync` at a time with `wait` and `ack`: packets are numbered by
 *   the server (`X-Pollgate-Seq`), a failed sync is asked for again with the same `ack`, so
 *   nothing is lost or repeated;
 * - sends go one at a time, in order, each with a rising `seq`: a retried send is answered
 *   from the server's record and never runs twice;
 * - network errors, 5xx and 409 "in progress" are retried with backoff; past `retryBudget`
 *   milliseconds of consecutive failures the socket fires `error`, then `close` (1006);
 * - the first `message` after `open` is the open answer, the frame-size message a jWebSocket
 *   server sends first (`{"ns":"org.jwebsocket.msgctrl",...,"name":"maxFrameSize",...}`), then
 *   the packets of each sync in order (the welcome first), and the answer of each send (the
 *   first packet the server produced for it) when it has one;
 * - `send()` returns a promise of its acknowledgement (true), or false if the socket closed first;
 * - the tabs of an origin share one held poll (docs/PROTOCOL.md, "Shared poll"): a browser
 *   opens six connections per host, and a poll per tab would hold them all. A SharedWorker
 *   (this same script) holds the poll where the browser has one; elsewhere the sockets elect
 *   a leader with the Web Locks API and talk over a BroadcastChannel. Each socket keeps its
 *   own connector, its sends and its close; only the waiting is shared. `share: false` turns
 *   it off. See "Sharing the poll" below.
 *
 * Close codes it reports (besides the codes given to `close()`):
 *   1000 the server closed the connection because the client asked (`X-Pollgate-Close-Reason: client`)
 *   1001 the server is shutting down, or the page is being unloaded
 *   1006 the server could not be reached within the retry budget (wasClean false)
 *   1009 a message was larger than the server's `maxframesize` (413)
 *   4000 the server no longer knows this connection: it was restarted without its state, or the
 *        session expired while the client was away (wasClean false; open a new socket and log in again)
 *   4001 closed by the server for inactivity (`timeout`)
 *   4002 evicted to admit a new connection (`evicted`)
 *   4003 its queue overflowed (`queue overflow`)
 */
(function (global) {
  "use strict";

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSING = 2;
  const CLOSED = 3;

  /** The close command the server queues as a packet. */
  const CLOSE_COMMAND = "http.command.close";
  /** Close codes for the server's `X-Pollgate-Close-Reason` values. */
  const CLOSE_CODES = { client: 1000, shutdown: 1001, timeout: 4001, evicted: 4002, "queue overflow": 4003 };
  const INVALID_STATE = "Invalid connection state!";
  const UNKNOWN_REASON =
    "pollgate: the server no longer knows this connection (it was restarted, or the session expired)";

  /** Thrown inside the loops when the socket was closed under them: stop quietly. */
  const STOPPED = Symbol("stopped");

  /** The retry budget ran out. */
  class Unreachable extends Error {}

  const encoder = new TextEncoder();
  const byteLength = (text) => encoder.encode(text).length;

  /**
   * The endpoint for a URL: a path ending in `/http` is kept (`ws` becomes `http`, `wss`
   * `https`); `ws(s)://host/ctx/servlet` (as jWebSocket.js builds it, e.g.
   * `ws://host:8787/jWebSocket/jWebSocket`) maps to `http(s)://host/ctx/http`; a bare host to
   * the default context `/jWebSocket`. `context` (an option) overrides the path's. The query
   * is dropped: a `connectionId` there is never used (the socket draws its own), a
   * `sessionId` there is taken over by the constructor.
   */
  function endpointOf(url, context) {
    let u;
    try {
      u = new URL(url, global.location ? global.location.href : undefined);
    } catch (e) {
      throw new DOMException(`The URL '${url}' is invalid.`, "SyntaxError");
    }
    const schemes = { "ws:": "http:", "wss:": "https:", "http:": "http:", "https:": "https:" };
    if (!schemes[u.protocol]) {
      throw new DOMException(`The URL's scheme must be ws, wss, http or https; '${u.protocol}' is not allowed.`, "SyntaxError");
    }
    const path = u.pathname.replace(/\/+$/, "");
    let endpointPath;
    if (context !== undefined && context !== null) {
      endpointPath = `${String(context).replace(/\/+$/, "")}/http`;
    } else if (path.endsWith("/http")) {
      endpointPath = path;
    } else {
      const segments = path.split("/").filter(Boolean);
      const ctx = segments.length >= 2 ? segments.slice(0, -1) : segments.length === 1 ? segments : ["jWebSocket"];
      endpointPath = `/${ctx.join("/")}/http`;
    }
    return `${schemes[u.protocol]}//${u.host}${endpointPath}`;
  }

  /** 128 random bits as 32 hex digits. */
  function randomId() {
    const bytes = new Uint8Array(16);
    global.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Waits `ms`, or throws STOPPED as soon as `signal` aborts. */
  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(STOPPED);
      const done = () => {
        clearTimeout(timer);
        reject(STOPPED);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", done);
        resolve();
      }, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** A MessageEvent / CloseEvent where the browser has them, a plain Event with fields otherwise. */
  function makeEvent(type, init) {
    const Ctor = { message: global.MessageEvent, close: global.CloseEvent }[type];
    if (typeof Ctor === "function") {
      try {
        return new Ctor(type, init);
      } catch (e) {
        // fall through to the plain event
      }
    }
    const event = new Event(type);
    for (const key of Object.keys(init || {})) {
      Object.defineProperty(event, key, { value: init[key], enumerable: true });
    }
    return event;
  }

  // ---- sharing the poll ------------------------------------------------------------------
  //
  // A browser opens at most six HTTP/1.1 connections per host; a held poll per tab would take
  // them all once six tabs are open. So the sockets of an origin (same endpoint) share one
  // poll (docs/PROTOCOL.md, "Shared poll"): a hub holds it for them all and hands each socket
  // the packets of its own connector. The hub runs
  // - in a SharedWorker running this very script, where the browser has SharedWorker and
  //   the script's URL is known; or else
  // - in one socket elected leader with the Web Locks API, the others talking to it over a
  //   BroadcastChannel. When the leader's tab goes, the browser releases its lock, the next
  //   socket waiting for it becomes leader and every socket joins it again, with its own
  //   `ack`: nothing is lost, and what comes twice is skipped by its sequence number.
  // Both are scoped by the browser to the origin, so no other origin's page can join.
  // Without the Web Locks API a socket polls alone.
  //
  // Each socket holds a lock of its own while it lives; the hub asks for it, and gets it
  // when the socket's tab is gone (closed or crashed): it then drops the connector and
  // closes it on the server, as the tab itself would have.

  /** The most connectors one shared poll may carry (the server's limit). */
  const SHARE_LIMIT = 64;
  /** How long the hub waits for its members to confirm a hand-over before it polls again. */
  const CONFIRM_MS = 1000;
  const SHARE_PREFIX = "pollgate shared poll ";

  /** The URL of this script, for the SharedWorker (the module sets it when imported). */
  let scriptUrl = global.document && global.document.currentScript ? global.document.currentScript.src : null;

  /** One POST to the endpoint with `connectionId` in the header. */
  async function postForm(endpoint, connectionId, params, signal) {
    const res = await global.fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "X-Pollgate-Connection": connectionId },
      body: new URLSearchParams(params).toString(),
      cache: "no-store",
      signal,
    });
    return { status: res.status, text: await res.text() };
  }

  /**
   * Holds the shared poll of one endpoint for its members: `{key, connectionId, ack, wait,
   * retryBudget, minBackoff, maxBackoff, post(message)}`. Messages to a member: `count`
   * (how many share the poll), `poll` (one connector's part of an answer), `solo` (poll on
   * your own), `unreachable` (the retry budget ran out).
   *
   * A member's `ack` moves only when the member confirms what it was handed (`ack(key, n)`):
   * a hand-over travels by message, and a hub that acknowledged to the server what it had
   * only posted could lose it if its tab went away before the message arrived. So after each
   * answer the hub waits, up to CONFIRM_MS, for the confirmations before it polls again; a
   * member that stays silent that long (a frozen tab) is counted as handed, so one slow tab
   * cannot hold the others' poll back.
   */
  class PollHub {
    #endpoint;
    #members = new Map();
    /** Aborts the poll in flight when the members change. */
    #poll = null;
    #changed = false;
    #running = false;
    #stopped = false;
    /** Resolves the wait for confirmations (see `ack`). */
    #wake = null;

    /** Told the members (`[{key, connectionId}]`) each time they change. */
    #onChange;

    constructor(endpoint, onChange) {
      this.#endpoint = endpoint;
      this.#onChange = onChange || (() => {});
    }

    /**
     * Takes over the members of a hub that went away with its tab (`[{key, connectionId}]`):
     * a socket still alive joins again; one that went with the tab, or since, is closed.
     */
    adopt(roster) {
      for (const m of roster) {
        if (!this.#members.has(m.key)) this.#watch(m, () => !this.#members.has(m.key));
      }
    }

    join(member) {
      const known = this.#members.get(member.key);
      if (known) {
        // Joining again (a new leader, or after a takeover): the socket's own `ack` wins.
        Object.assign(known, member, { handed: 0 });
      } else if (this.#members.size >= SHARE_LIMIT || this.#stopped) {
        return member.post({ type: "solo" });
      } else {
        this.#members.set(member.key, member);
        this.#watch(member);
      }
      this.#update();
    }

    leave(key) {
      if (this.#members.delete(key)) this.#update();
    }

    /** A member confirms that it has handled everything up to `n`: the next poll acks it. */
    ack(key, n) {
      const m = this.#members.get(key);
      if (!m || !(n > m.ack)) return;
      m.ack = n;
      this.#woken();
    }

    #woken() {
      const wake = this.#wake;
      this.#wake = null;
      if (wake) wake();
    }

    stop() {
      this.#stopped = true;
      this.#members.clear();
      this.#woken();
      if (this.#poll) this.#poll.abort();
    }

    /** The members changed: tell them how many share, and poll again with the new list. */
    #update() {
      for (const m of this.#members.values()) m.post({ type: "count", n: this.#members.size });
      this.#onChange([...this.#members.values()].map((m) => ({ key: m.key, connectionId: m.connectionId })));
      this.#changed = true;
      this.#woken();
      if (this.#poll) this.#poll.abort();
      if (!this.#running) this.#run();
    }

    /**
     * Drops a member whose tab went away without leaving (its lock is free: `gone()` says
     * whether it had not left), and closes its connector.
     */
    #watch(member, gone = () => this.#members.get(member.key) === member) {
      if (!global.navigator || !global.navigator.locks) return;
      global.navigator.locks.request(`${SHARE_PREFIX}member ${member.key}`, () => {
        if (this.#stopped || !gone()) return;
        this.leave(member.key);
        postForm(this.#endpoint, member.connectionId, { action: "close" }).catch(() => {});
      });
    }

    async #run() {
      this.#running = true;
      let failingSince = 0;
      let attempt = 0;
      try {
        while (this.#members.size && !this.#stopped) {
          this.#changed = false;
          const members = [...this.#members.values()];
          const wait = members[0].wait;
          const abort = new AbortController();
          this.#poll = abort;
          // A connection that went silent is given up after the wait and a margin.
          const timer = setTimeout(() => abort.abort(), wait + 15000);
          let res = null;
          let why = "network error";
          try {
            const share = JSON.stringify(members.map((m) => ({ connectionId: m.connectionId, ack: m.ack })));
            res = await postForm(this.#endpoint, members[0].connectionId, { action: "sync", wait: String(wait), share }, abort.signal);
          } catch (e) {
            why = (e && e.message) || why;
          } finally {
            clearTimeout(timer);
            this.#poll = null;
          }
          if (this.#changed || this.#stopped) continue; // poll again at once, with the new list
          if (res && res.status === 200) {
            failingSince = 0;
            attempt = 0;
            this.#hand(members, res.text);
            await this.#confirmations();
            continue;
          }
          if (res && res.status < 500) {
            // Refused (an older server without shared polls?): everyone polls on their own.
            this.#dismiss({ type: "solo" });
            return;
          }
          if (res) why = `HTTP ${res.status} ${res.text}`;
          // Retried with backoff; a member whose retry budget ran out is told so.
          const now = Date.now();
          failingSince = failingSince || now;
          for (const m of members) {
            if (now - failingSince >= m.retryBudget) {
              const seconds = ((now - failingSince) / 1000).toFixed(1);
              this.#members.delete(m.key);
              m.post({ type: "unreachable", reason: `pollgate: the server could not be reached for ${seconds} s (${why})` });
            }
          }
          attempt++;
          const backoff = Math.min(members[0].maxBackoff, members[0].minBackoff * 2 ** (attempt - 1));
          await new Promise((r) => setTimeout(r, backoff + Math.random() * members[0].minBackoff));
        }
      } finally {
        this.#running = false;
      }
    }

    /** Hands each member its part of an answer; members done with the poll leave it. */
    #hand(members, text) {
      let connectors;
      try {
        connectors = JSON.parse(text).connectors;
      } catch (e) {
        connectors = null;
      }
      if (!Array.isArray(connectors) || connectors.length !== members.length) return this.#dismiss({ type: "solo" });
      let left = false;
      members.forEach((m, i) => {
        if (this.#members.get(m.key) !== m) return; // left while the poll was held
        const c = connectors[i];
        m.post({ type: "poll", seq: c.seq, packets: c.packets, close: c.close, state: c.state });
        if (c.state || c.close) {
          this.#members.delete(m.key);
          left = true;
        } else if (c.seq > m.ack) {
          m.handed = Math.max(m.handed || 0, c.seq); // acked once the member confirms it
        }
      });
      if (left) this.#update();
    }

    /** Waits until every member confirmed its hand-over, the members change, or CONFIRM_MS. */
    async #confirmations() {
      const pending = () => [...this.#members.values()].filter((m) => m.handed > m.ack);
      const deadline = Date.now() + CONFIRM_MS;
      while (pending().length && !this.#changed && !this.#stopped && Date.now() < deadline) {
        await new Promise((resolve) => {
          this.#wake = resolve;
          setTimeout(resolve, deadline - Date.now());
        });
        this.#wake = null;
      }
      if (this.#changed || this.#stopped) return;
      for (const m of pending()) m.ack = m.handed;
    }

    #dismiss(message) {
      for (const m of this.#members.values()) m.post(message);
      this.#members.clear();
    }
  }

  /**
   * Puts a socket's connector into the origin's shared poll: returns `{mode, join(), ack(n),
   * leave(), release()}`, or null where sharing is not possible. `member()` describes the
   * connector (its `ack` as of now); `onMessage` gets the hub's messages. `join()` joins
   * (again: after a takeover), `ack(n)` confirms that the socket handled everything up to
   * `n`, `leave()` takes the connector out, `release()` (when the socket has ended) lets the
   * hub know the socket is gone.
   */
  function joinSharedPoll(endpoint, key, member, onMessage) {
    const nav = global.navigator;
    if (!nav || !nav.locks || !global.BroadcastChannel) return null;
    // The socket's own lock, held until it is released: the hub gets it when the tab is gone.
    let unlock;
    const locked = new Promise((acquired) => {
      nav.locks
        .request(`${SHARE_PREFIX}member ${key}`, () => {
          acquired();
          return new Promise((release) => (unlock = release));
        })
        .catch(() => {});
    });
    // No word from a hub in time: poll on our own.
    let heard = false;
    const hear = (message) => {
      heard = true;
      onMessage(message);
    };
    const deaf = setTimeout(() => heard || onMessage({ type: "solo" }), 10000);
    let chosen = null;
    const join = () => locked.then(() => chosen && chosen.join(member()));
    chosen = (global.SharedWorker && scriptUrl && workerLink(endpoint, key, hear)) || channelLink(endpoint, key, hear, join);
    join();
    return {
      mode: chosen.mode,
      join,
      ack(n) {
        if (chosen) chosen.ack(n);
      },
      leave() {
        clearTimeout(deaf);
        const link = chosen;
        chosen = null;
        if (link) link.leave();
      },
      release() {
        locked.then(() => unlock && unlock());
      },
    };
  }

  /** The hub in a SharedWorker (this script, named for the endpoint). */
  function workerLink(endpoint, key, onMessage) {
    let worker;
    try {
      worker = new global.SharedWorker(scriptUrl, { name: SHARE_PREFIX + endpoint });
    } catch (e) {
      return null; // e.g. the script is of another origin
    }
    worker.onerror = () => onMessage({ type: "solo" });
    worker.port.onmessage = (e) => onMessage(e.data);
    worker.port.start();
    return {
      mode: "worker",
      join: (member) => worker.port.postMessage({ t: "join", member }),
      ack: (n) => worker.port.postMessage({ t: "ack", key, ack: n }),
      leave() {
        worker.port.postMessage({ t: "leave", key });
        worker.port.close();
      },
    };
  }

  /**
   * The hub in the leader socket: every socket asks for the endpoint's leader lock and, once
   * it has it, holds the poll until it leaves; messages go over a BroadcastChannel. A new
   * leader says so, and every socket calls `rejoin`.
   */
  function channelLink(endpoint, key, onMessage, rejoin) {
    const name = SHARE_PREFIX + endpoint;
    const channel = new global.BroadcastChannel(name);
    const stopped = new AbortController();
    let resign = null;
    // The members of the leader's poll, as it last said: a new leader adopts them.
    let roster = [];
    channel.onmessage = (e) => {
      const m = e.data;
      if (m.t === "leader") rejoin();
      else if (m.t === "roster") roster = m.members;
      else if (m.to === key) onMessage(m.message);
    };
    global.navigator.locks
      .request(`${name} leader`, { signal: stopped.signal }, () => {
        const serve = new global.BroadcastChannel(name);
        const hub = new PollHub(endpoint, (members) => serve.postMessage({ t: "roster", members }));
        hub.adopt(roster.filter((m) => m.key !== key));
        serve.onmessage = (e) => {
          const m = e.data;
          if (m.t === "join") {
            const to = m.member.key;
            hub.join(Object.assign(m.member, { post: (message) => serve.postMessage({ to, message }) }));
          } else if (m.t === "ack") {
            hub.ack(m.key, m.ack);
          } else if (m.t === "leave") {
            hub.leave(m.key);
          }
        };
        onMessage({ type: "mode", mode: "leader" });
        // Listening: every socket (this one too) joins now.
        serve.postMessage({ t: "leader" });
        return new Promise((release) => {
          resign = () => {
            hub.stop();
            serve.close();
            release();
          };
        });
      })
      .catch(() => {}); // left before its turn came
    return {
      mode: "follower",
      join: (member) => channel.postMessage({ t: "join", member }),
      ack: (n) => channel.postMessage({ t: "ack", key, ack: n }),
      leave() {
        channel.postMessage({ t: "leave", key });
        channel.close();
        stopped.abort();
        if (resign) resign();
      },
    };
  }

  /** In the SharedWorker: one hub for the endpoint the worker is named for. */
  function serveWorker() {
    const hub = new PollHub(global.name.slice(SHARE_PREFIX.length));
    global.onconnect = (e) => {
      const port = e.ports[0];
      port.onmessage = (m) => {
        const data = m.data;
        if (data.t === "join") hub.join(Object.assign(data.member, { post: (message) => port.postMessage(message) }));
        else if (data.t === "ack") hub.ack(data.key, data.ack);
        else if (data.t === "leave") hub.leave(data.key);
      };
      port.start();
    };
  }

  class PollgateSocket extends EventTarget {
    // Set once by the constructor.
    #url;
    #endpoint;
    #protocol = "";
    #options;
    /** The secret connection id: only ever in the X-Pollgate-Connection header. */
    #id = randomId();

    #state = CONNECTING;
    #binaryType = "blob";
    /** Aborts every request and backoff wait when the socket is closed. */
    #stop = new AbortController();
    /** Aborts the held sync alone (close() lets queued sends finish first). */
    #stopSync = new AbortController();

    /** Sequence number of the last packet dispatched (the next sync's `ack`). */
    #ack = 0;
    /** Outgoing messages not yet acknowledged: `{text, bytes, seq, resolve}`, oldest first. */
    #queue = [];
    #nextSeq = 1;
    #buffered = 0;
    #pumping = false;
    /** The code and reason given to close(), while CLOSING. */
    #closing = null;
    /** The close action was sent (after close() and the last queued send). */
    #closeSent = false;
    /** close fired: nothing more happens. */
    #ended = false;
    #maxFrameSize = 0;
    #stats = { retries: 0, sent: 0, received: 0 };
    /** Names this socket to the shared poll (not a secret: it is not the connection id). */
    #key = randomId();
    /** How the poll is held: `{mode, connectors}` (see the `sharing` getter). */
    #sharing = { mode: "solo", connectors: 1 };
    /** Takes our connector out of the shared poll, while it is in. */
    #leave = null;
    /** Tells the shared poll this socket has ended (after its own close request). */
    #release = null;
    #onPageHide = () => this.#goingAway();

    /**
     * @param {string|URL} url `http(s)://host:port/jWebSocket/http`, or a `ws(s)://` URL as
     *   jWebSocket.js builds it.
     * @param {string|string[]|object} [protocols] sub-protocols (or the options).
     * @param {object} [options] `{wait, retryBudget, sessionId, context, share}`; see pollgate.d.ts.
     */
    constructor(url, protocols, options) {
      super();
      if (protocols && typeof protocols === "object" && !Array.isArray(protocols)) {
        options = protocols;
        protocols = undefined;
      }
      const defaults = { wait: 25000, retryBudget: 10000, minBackoff: 100, maxBackoff: 2000, share: true };
      this.#options = Object.assign(defaults, new.target.defaults, options);
      this.#url = String(url);
      this.#endpoint = endpointOf(this.#url, this.#options.context);
      if (!this.#options.sessionId) {
        // jWebSocket's HTTP mode puts its sessionId in the URL's query.
        const base = global.location ? global.location.href : undefined;
        this.#options.sessionId = new URL(this.#url, base).searchParams.get("sessionId") || undefined;
      }
      // A jWebSocket server accepts the sub-protocol a client asks for first.
      const wanted = Array.isArray(protocols) ? protocols : protocols ? [String(protocols)] : [];
      this.#protocol = wanted.length ? String(wanted[0]) : "";
      for (const type of ["open", "message", "error", "close"]) {
        this[`on${type}`] = null;
        this.addEventListener(type, (event) => {
          const handler = this[`on${type}`];
          if (typeof handler === "function") handler.call(this, event);
        });
      }
      if (global.addEventListener) global.addEventListener("pagehide", this.#onPageHide);
      this.#run();
    }

    get url() {
      return this.#url;
    }
    /** The HTTP endpoint actually used (`http(s)://host:port{context}/http`). */
    get endpoint() {
      return this.#endpoint;
    }
    get readyState() {
      return this.#state;
    }
    /** Bytes (UTF-8) given to send() and not yet acknowledged by the server. */
    get bufferedAmount() {
      return this.#buffered;
    }
    get protocol() {
      return this.#protocol;
    }
    get extensions() {
      return "";
    }
    get binaryType() {
      return this.#binaryType;
    }
    set binaryType(value) {
      if (value === "blob" || value === "arraybuffer") this.#binaryType = value;
    }
    /** The server's `maxframesize` (from the open answer), 0 before open. */
    get maxFrameSize() {
      return this.#maxFrameSize;
    }
    /**
     * How this socket's poll is held: `mode` is `worker` (a SharedWorker holds it), `leader`
     * (this socket holds it for the origin's others), `follower` (another tab's socket holds
     * it) or `solo` (a poll of its own); `connectors` is how many sockets share it.
     */
    get sharing() {
      return Object.assign({}, this.#sharing);
    }
    /** Counters: requests retried, messages acknowledged, messages received. */
    get stats() {
      return Object.assign({}, this.#stats);
    }

    /**
     * Queues a text message; they are delivered one at a time, in order. Returns a promise
     * that resolves `true` once the server acknowledged it, `false` if the socket closed
     * first (it never rejects). Binary data is sent as UTF-8 text.
     */
    send(data) {
      if (this.#state === CONNECTING) {
        throw new DOMException("Failed to execute 'send': still in CONNECTING state.", "InvalidStateError");
      }
      const text =
        data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? new TextDecoder().decode(data) : String(data);
      const bytes = byteLength(text);
      this.#buffered += bytes;
      if (this.#state !== OPEN) return Promise.resolve(false);
      return new Promise((resolve) => {
        this.#queue.push({ text, bytes, seq: 0, resolve });
        this.#pump();
      });
    }

    /**
     * Closes: messages already queued are delivered first, then the server is told (`close`)
     * and `close` fires with `wasClean` true and `code` (1005 when none is given).
     */
    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new DOMException(`The close code must be 1000 or in 3000-4999; ${code} is neither.`, "InvalidAccessError");
      }
      reason = reason === undefined ? "" : String(reason);
      if (byteLength(reason) > 123) {
        throw new DOMException("The close reason must not be longer than 123 bytes.", "SyntaxError");
      }
      if (this.#state === CLOSING || this.#state === CLOSED) return;
      if (this.#state === CONNECTING) {
        // As a browser does: the connection fails (CLOSING now, the events in a later task).
        // If the open reached the server, tell it.
        this.#state = CLOSING;
        setTimeout(() => this.#fail(1006, "closed before the connection was established"), 0);
        this.#post({ action: "close" }, { retry: false, signal: new AbortController().signal }).catch(() => {});
        return;
      }
      this.#state = CLOSING;
      this.#closing = { code: code === undefined ? 1005 : code, reason };
      this.#stopSync.abort();
      if (!this.#pumping) this.#finishClosing();
    }

    // ---- the connection's life ------------------------------------------------------------

    async #run() {
      try {
        const params = { action: "open" };
        if (this.#options.sessionId) params.sessionId = String(this.#options.sessionId);
        const res = await this.#post(params, {});
        let body = null;
        if (res.status === 200) {
          body = res.text;
          try {
            this.#maxFrameSize = JSON.parse(body).data || 0;
          } catch (e) {
            // not the frame-size message: keep 0
          }
        } else if (!(res.attempts > 1 && (res.status === 400 || res.status === 411) && res.text === INVALID_STATE)) {
          // (A retried open that finds its connector means the first attempt got through
          // and only its answer was lost: the id is ours alone.)
          return this.#fail(1006, `pollgate: open refused: HTTP ${res.status} ${res.text}`.trim());
        }
        if (this.#state !== CONNECTING) return;
        this.#state = OPEN;
        this.dispatchEvent(makeEvent("open"));
        // A jWebSocket server's first frame is this frame-size message; jWebSocket.js expects it.
        if (body) this.#deliver(body);
        if (this.#options.share !== false) await this.#sharedLoop();
        else await this.#syncLoop();
      } catch (e) {
        this.#failed(e);
      }
    }

    /** Long-polls until the socket closes. */
    async #syncLoop() {
      const wait = this.#options.wait;
      while (this.#state === OPEN) {
        const started = Date.now();
        const res = await this.#post(
          { action: "sync", wait: String(wait), ack: String(this.#ack) },
          { signal: this.#stopSync.signal, timeout: wait + 15000 },
        );
        if (this.#state !== OPEN) return;
        if (res.status === 400 || res.status === 411) {
          // Unknown connector, or an `ack` ahead of the server's numbering: it lost our state.
          return this.#fail(4000, UNKNOWN_REASON);
        }
        let packets;
        try {
          packets = res.status === 200 ? JSON.parse(res.text) : null;
        } catch (e) {
          packets = null;
        }
        if (!Array.isArray(packets)) {
          return this.#fail(1006, `pollgate: unexpected sync answer: HTTP ${res.status} ${res.text}`.trim());
        }
        const header = res.headers.get("X-Pollgate-Seq");
        const last = header === null ? NaN : Number(header);
        if (!this.#take(packets, last, res.headers.get("X-Pollgate-Close-Reason") || "")) return;
        if (packets.length === 0 && Date.now() - started < wait / 2) {
          // An early empty answer: the server may not know us (it answers an unknown
          // connector's sync at once with []). `active` tells: 204, or 400/411.
          const probe = await this.#post({ action: "active" }, { signal: this.#stopSync.signal });
          if (probe.status === 400 || probe.status === 411) return this.#fail(4000, UNKNOWN_REASON);
        }
      }
    }

    /**
     * Handles the packets of one answer, the last numbered `last`: those handled before are
     * skipped, the close command ends the socket. Returns whether the socket is still open.
     */
    #take(packets, last, closeReason) {
      let seq = Number.isFinite(last) ? last - packets.length + 1 : NaN;
      for (const packet of packets) {
        const current = seq++;
        if (current <= this.#ack) continue; // delivered before (an answer asked for again)
        if (Number.isFinite(current)) this.#ack = current;
        if (packet === CLOSE_COMMAND) {
          this.#closedByServer(closeReason);
          return false;
        }
        if (this.#state !== OPEN) return false;
        this.#deliver(packet);
      }
      if (Number.isFinite(last) && last > this.#ack) this.#ack = last;
      return this.#state === OPEN;
    }

    /**
     * Lets the shared poll of this origin wait for our connector (see "Sharing the poll"),
     * until the socket ends. Falls back to a poll of its own where sharing is not possible or
     * the shared poll gives up on us.
     */
    async #sharedLoop() {
      const outcome = await new Promise((resolve) => {
        const member = () => ({
          key: this.#key,
          connectionId: this.#id,
          ack: this.#ack,
          wait: this.#options.wait,
          retryBudget: this.#options.retryBudget,
          minBackoff: this.#options.minBackoff,
          maxBackoff: this.#options.maxBackoff,
        });
        const link = joinSharedPoll(this.#endpoint, this.#key, member, (message) => {
          if (this.#state !== OPEN) return;
          switch (message.type) {
            case "count":
              this.#sharing.connectors = message.n;
              break;
            case "mode":
              this.#sharing.mode = message.mode;
              break;
            case "poll":
              if (message.state === "unknown" || message.state === "ack-ahead") return resolve("unknown");
              if (message.state === "superseded") {
                // Another poll took our connector (a leader's takeover): join again.
                setTimeout(() => this.#state === OPEN && link.join(), 500);
                return;
              }
              if (!Array.isArray(message.packets)) return resolve("solo");
              if (!this.#take(message.packets, message.seq, message.close || "")) resolve("ended");
              else link.ack(this.#ack);
              break;
            case "unreachable":
              resolve({ unreachable: message.reason });
              break;
            case "solo":
              resolve("solo");
              break;
          }
        });
        if (!link) return resolve("solo");
        this.#sharing = { mode: link.mode, connectors: 1 };
        this.#stopSync.signal.addEventListener("abort", () => resolve("stopped"), { once: true });
        this.#leave = () => link.leave();
        this.#release = () => link.release();
      });
      this.#leaveSharedPoll();
      if (outcome === "solo" && this.#state === OPEN) {
        this.#sharing = { mode: "solo", connectors: 1 };
        return this.#syncLoop();
      }
      if (outcome === "unknown") return this.#fail(4000, UNKNOWN_REASON);
      if (outcome && outcome.unreachable) return this.#fail(1006, outcome.unreachable);
    }

    #leaveSharedPoll() {
      const leave = this.#leave;
      this.#leave = null;
      if (leave) leave();
    }

    /** Sends the queue, one message at a time, until it is empty. */
    async #pump() {
      if (this.#pumping) return;
      this.#pumping = true;
      try {
        while (this.#queue.length && (this.#state === OPEN || this.#state === CLOSING)) {
          const item = this.#queue[0];
          if (item.text !== "") {
            if (!item.seq) item.seq = this.#nextSeq++;
            const res = await this.#post({ action: "send", seq: String(item.seq), data: item.text }, {});
            // 409 "no longer kept": processed long ago, only its answer is gone.
            const done = res.status === 200 || (res.status === 409 && /no longer kept/.test(res.text));
            if (!done) {
              if ((res.status === 400 || res.status === 411) && res.text === INVALID_STATE) {
                return this.#fail(4000, UNKNOWN_REASON);
              }
              if (res.status === 413) return this.#fail(1009, `pollgate: ${res.text}`);
              return this.#fail(1006, `pollgate: send refused: HTTP ${res.status} ${res.text}`.trim());
            }
            if (res.status === 200 && res.text && this.#state === OPEN) this.#deliver(res.text);
          } // (an empty message has no token to carry: nothing to send)
          this.#queue.shift();
          this.#buffered -= item.bytes;
          this.#stats.sent++;
          item.resolve(true);
        }
      } catch (e) {
        this.#failed(e);
      } finally {
        this.#pumping = false;
        if (this.#state === CLOSING) this.#finishClosing();
      }
    }

    /**
     * One action as a form POST, retried on network errors, 5xx and 409 "in progress" with
     * backoff until `retryBudget` ms of consecutive failures (then Unreachable). Any other
     * answer is returned as `{status, text, headers, attempts}`. Throws STOPPED once closed.
     */
    async #post(params, { signal = this.#stop.signal, timeout = 30000, retry = true }) {
      let failingSince = 0;
      for (let attempt = 1; ; attempt++) {
        let why;
        try {
          const res = await this.#fetch(params, signal, timeout);
          const transient = res.status >= 500 || (res.status === 409 && /in progress/.test(res.text));
          if (!transient) return Object.assign(res, { attempts: attempt });
          why = `HTTP ${res.status} ${res.text}`;
        } catch (e) {
          if (signal.aborted || this.#stop.signal.aborted || e === STOPPED) throw STOPPED;
          why = (e && e.message) || "network error";
        }
        if (!retry) throw new Unreachable(why);
        const now = Date.now();
        failingSince = failingSince || now;
        if (now - failingSince >= this.#options.retryBudget) {
          const seconds = ((now - failingSince) / 1000).toFixed(1);
          throw new Unreachable(`pollgate: the server could not be reached for ${seconds} s (${why})`);
        }
        this.#stats.retries++;
        const backoff = Math.min(this.#options.maxBackoff, this.#options.minBackoff * 2 ** (attempt - 1));
        await sleep(backoff + Math.random() * this.#options.minBackoff, signal);
      }
    }

    /** One POST; aborted by `signal` or after `timeout` ms (a connection that went silent). */
    async #fetch(params, signal, timeout, keepalive = false) {
      const abort = new AbortController();
      const onAbort = () => abort.abort();
      signal.addEventListener("abort", onAbort);
      const timer = setTimeout(onAbort, timeout);
      try {
        const res = await global.fetch(this.#endpoint, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded", "X-Pollgate-Connection": this.#id },
          body: new URLSearchParams(params).toString(),
          cache: "no-store",
          keepalive,
          signal: abort.signal,
        });
        const text = await res.text();
        return { status: res.status, text, headers: res.headers };
      } finally {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      }
    }

    #deliver(data) {
      this.#stats.received++;
      this.dispatchEvent(makeEvent("message", { data, origin: new URL(this.#endpoint).origin }));
    }

    /** The server queued the close command (its reason in `X-Pollgate-Close-Reason`). */
    #closedByServer(reason) {
      const code = CLOSE_CODES[reason] || 1000;
      // Acknowledge the close command so the server can forget the connection at once.
      const ack = { action: "sync", ack: String(this.#ack) };
      this.#fetch(ack, new AbortController().signal, 5000).catch(() => {});
      this.#finish(code, reason, true);
    }

    /** After close(): once the queue is sent, tell the server and report the close. */
    async #finishClosing() {
      if (this.#state !== CLOSING || !this.#closing || this.#queue.length || this.#pumping || this.#closeSent) return;
      this.#closeSent = true;
      try {
        await this.#fetch({ action: "close" }, new AbortController().signal, 5000);
      } catch (e) {
        // the server will reap the connection
      }
      this.#finish(this.#closing.code, this.#closing.reason, true);
    }

    /** The page is unloading: tell the server (keepalive) and stop. */
    #goingAway() {
      if (this.#state === CLOSED) return;
      this.#fetch({ action: "close" }, new AbortController().signal, 5000, true).catch(() => {});
      this.#finish(1001, "the page was unloaded", true);
    }

    /** A loop ended with an exception. */
    #failed(e) {
      if (e === STOPPED) return;
      this.#fail(1006, e instanceof Unreachable ? e.message : `pollgate: ${e && e.message ? e.message : e}`);
    }

    /** An unclean end: `error`, then `close` with wasClean false. */
    #fail(code, reason) {
      this.#finish(code, reason, false);
    }

    /** The one way to CLOSED: stops every request and fires `close` (after `error` if unclean). */
    #finish(code, reason, wasClean) {
      if (this.#ended) return;
      this.#ended = true;
      this.#state = CLOSED;
      this.#stop.abort();
      this.#stopSync.abort();
      this.#leaveSharedPoll();
      if (this.#release) this.#release();
      if (global.removeEventListener) global.removeEventListener("pagehide", this.#onPageHide);
      for (const item of this.#queue.splice(0)) item.resolve(false);
      if (!wasClean) this.dispatchEvent(makeEvent("error"));
      this.dispatchEvent(makeEvent("close", { code, reason, wasClean }));
    }

    // ---- drop-in for window.WebSocket -----------------------------------------------------

    /**
     * Replaces `window.WebSocket` with PollgateSocket (with `options` as defaults, e.g.
     * `{retryBudget: 30000}`), so jWebSocket.js and other WebSocket code use pollgate.
     * The browser's own class stays reachable as `PollgateSocket.NativeWebSocket`.
     * Returns the installed class.
     */
    static install(options) {
      if (!Object.prototype.hasOwnProperty.call(PollgateSocket, "NativeWebSocket")) {
        PollgateSocket.NativeWebSocket = global.WebSocket;
      }
      const Installed = class WebSocket extends PollgateSocket {};
      Installed.defaults = Object.assign({}, PollgateSocket.defaults, options);
      global.WebSocket = Installed;
      return Installed;
    }

    /** Puts the browser's own WebSocket back. */
    static uninstall() {
      if (Object.prototype.hasOwnProperty.call(PollgateSocket, "NativeWebSocket")) {
        global.WebSocket = PollgateSocket.NativeWebSocket;
      }
    }
  }

  /** Options every new socket starts from (the constructor's `options` win). */
  PollgateSocket.defaults = {};
  for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
    Object.defineProperty(PollgateSocket, name, { value, enumerable: true });
    Object.defineProperty(PollgateSocket.prototype, name, { value, enumerable: true });
  }
  PollgateSocket.endpointOf = endpointOf;
  /** The URL of pollgate.js, which the SharedWorker of a shared poll runs (null: unknown). */
  Object.defineProperty(PollgateSocket, "scriptUrl", {
    get: () => scriptUrl,
    set: (url) => (scriptUrl = url ? String(url) : null),
    enumerable: true,
  });

  global.PollgateSocket = PollgateSocket;

  // Run as the SharedWorker of a shared poll: be its hub.
  const Scope = global.SharedWorkerGlobalScope;
  if (typeof Scope === "function" && global instanceof Scope && String(global.name).startsWith(SHARE_PREFIX)) {
    serveWorker();
  }
})(typeof globalThis !== "undefined" ? globalThis : window);
