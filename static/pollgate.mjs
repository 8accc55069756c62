/*! pollgate.mjs: pollgate's browser client as an ES module.
 *
 * The code lives in the classic script pollgate.js (one source, no build step); importing it
 * runs it once and defines globalThis.PollgateSocket, which this module re-exports.
 *
 *   import { PollgateSocket } from "/pollgate.mjs";
 */
import "./pollgate.js";

export const PollgateSocket = globalThis.PollgateSocket;
// A module has no `document.currentScript`: tell the class where its script is, for the
// SharedWorker that holds the shared poll.
if (!PollgateSocket.scriptUrl) PollgateSocket.scriptUrl = new URL("./pollgate.js", import.meta.url).href;
export default PollgateSocket;
