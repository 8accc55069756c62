// Type declarations of pollgate.js / pollgate.mjs: the browser WebSocket interface over
// pollgate's long-polling HTTP protocol.

export interface PollgateSocketOptions {
  /** Milliseconds the server may hold each sync (long-poll); the server caps it. Default 25000. */
  wait?: number;
  /** Milliseconds of consecutive failures (network errors, 5xx) before the socket gives up
   * with `error` + `close` (1006). Default 10000. */
  retryBudget?: number;
  /** First retry delay in ms, doubled per attempt. Default 100. */
  minBackoff?: number;
  /** Longest retry delay in ms. Default 2000. */
  maxBackoff?: number;
  /** jWebSocket `sessionId`: sockets with the same one share login and session storage. */
  sessionId?: string;
  /** The server's `context` (e.g. "/jWebSocket"); overrides the one taken from the URL. */
  context?: string;
  /** Share one held poll with the other sockets of this origin (its tabs), in a SharedWorker
   * or a leader tab (docs/PROTOCOL.md, "Shared poll"). Default true; false polls alone. */
  share?: boolean;
}

/** How a socket's poll is held. */
export interface PollgateSharing {
  /** `worker`: a SharedWorker holds it; `leader`: this socket holds it for the others;
   * `follower`: another tab's socket holds it; `solo`: a poll of its own. */
  mode: "worker" | "leader" | "follower" | "solo";
  /** How many sockets share the poll (1 when solo). */
  connectors: number;
}

export interface PollgateStats {
  /** Requests retried after a network error, 5xx or 409 "in progress". */
  retries: number;
  /** Messages acknowledged by the server. */
  sent: number;
  /** Message events dispatched. */
  received: number;
}

export interface PollgateSocketEventMap {
  open: Event;
  message: MessageEvent<string>;
  error: Event;
  close: CloseEvent;
}

export declare class PollgateSocket extends EventTarget {
  /**
   * @param url `http(s)://host:port/jWebSocket/http`, or `ws(s)://host:port/jWebSocket/...`
   *   (mapped to `http(s)://host:port/jWebSocket/http`).
   */
  constructor(url: string | URL, protocols?: string | string[] | PollgateSocketOptions, options?: PollgateSocketOptions);

  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;

  readonly url: string;
  /** The HTTP endpoint used: `http(s)://host:port{context}/http`. */
  readonly endpoint: string;
  readonly readyState: 0 | 1 | 2 | 3;
  /** UTF-8 bytes given to send() and not yet acknowledged by the server. */
  readonly bufferedAmount: number;
  readonly protocol: string;
  readonly extensions: string;
  binaryType: "blob" | "arraybuffer";
  /** The server's maxframesize, known after open (0 before). */
  readonly maxFrameSize: number;
  readonly stats: PollgateStats;
  /** How this socket's poll is held, and by how many sockets. */
  readonly sharing: PollgateSharing;

  onopen: ((this: PollgateSocket, ev: Event) => any) | null;
  onmessage: ((this: PollgateSocket, ev: MessageEvent<string>) => any) | null;
  onerror: ((this: PollgateSocket, ev: Event) => any) | null;
  onclose: ((this: PollgateSocket, ev: CloseEvent) => any) | null;

  /** Queues a message (delivered in order). Resolves true when the server acknowledged it,
   * false if the socket closed first; never rejects. Throws InvalidStateError while CONNECTING. */
  send(data: string | ArrayBuffer | ArrayBufferView): Promise<boolean>;
  /** Delivers what is queued, tells the server, fires `close` (wasClean, code or 1005). */
  close(code?: number, reason?: string): void;

  addEventListener<K extends keyof PollgateSocketEventMap>(
    type: K,
    listener: (this: PollgateSocket, ev: PollgateSocketEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PollgateSocketEventMap>(
    type: K,
    listener: (this: PollgateSocket, ev: PollgateSocketEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;

  /** Options every new socket starts from. */
  static defaults: PollgateSocketOptions;
  /** The browser's own WebSocket, once install() ran. */
  static NativeWebSocket?: typeof WebSocket;
  /** Replaces globalThis.WebSocket (e.g. for jWebSocket.js); returns the installed class. */
  static install(options?: PollgateSocketOptions): typeof PollgateSocket;
  /** Restores the browser's own WebSocket. */
  static uninstall(): void;
  /** The HTTP endpoint a URL maps to. */
  static endpointOf(url: string, context?: string): string;
  /** The URL of pollgate.js, which the SharedWorker of the shared poll runs (null: unknown,
   * and the tabs elect a leader instead). Set from the script tag or by pollgate.mjs. */
  static scriptUrl: string | null;
}

export default PollgateSocket;

declare global {
  interface Window {
    PollgateSocket: typeof PollgateSocket;
  }
}
