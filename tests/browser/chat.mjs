// Scenario a: two pages chat through the demo page. Each sees the other online, a broadcast
// and a direct message arrive, each outgoing message ends "delivered", a wrong password is
// refused visibly, and closing one page makes it leave the other's online list.

import { BASE, check, demoLogin, run, step, waitOnline } from "./lib.mjs";

await run(60000, async (context) => {
  step("guest and root log in on two pages");
  const guest = await demoLogin(context, `${BASE}/`, "guest", "guest");
  const root = await demoLogin(context, `${BASE}/jWebSocket/`, "root", "root");
  await waitOnline(guest, "root");
  await waitOnline(root, "guest");

  step("guest broadcasts");
  await guest.fill("#text", "hello everyone");
  await guest.click("#send");
  await root.waitForSelector('#log li.broadcast:has-text("hello everyone")');
  const got = await root.textContent('#log li.broadcast:has-text("hello everyone")');
  check(got.includes("guest:"), `the broadcast names its sender: ${got}`);
  await guest.waitForSelector('#log li.mine[data-state="delivered"]:has-text("hello everyone")');

  step("root sends guest a direct message");
  await root.click('#users li[data-user="guest"]');
  check((await root.getAttribute("#text", "placeholder")) === "Direct message to guest", "guest is selected");
  await root.fill("#text", "just for you");
  await root.click("#send");
  await guest.waitForSelector('#log li.send:has-text("just for you")');
  await root.waitForSelector('#log li.mine[data-state="delivered"]:has-text("just for you")');
  const direct = await guest.textContent('#log li.send:has-text("just for you")');
  check(direct.includes("to you") && direct.includes("root:"), `a direct message, from root: ${direct}`);

  step("the online list names connectors by id");
  const guestId = await root.getAttribute('#users li[data-user="guest"]', "data-id");
  check(/^[0-9a-f]{32}$/.test(guestId), "the list holds connector ids");

  step("a wrong password is refused visibly");
  const third = await context.newPage();
  await third.goto(`${BASE}/`);
  await third.waitForSelector("#login:not([disabled])");
  await third.fill("#username", "guest");
  await third.fill("#password", "not the password");
  await third.click("#login");
  await third.waitForFunction(() => document.getElementById("me").textContent.startsWith("Login failed"));
  const refused = await third.textContent("#me");
  check(refused.includes("Bad credentials"), `the reason is shown: ${refused}`);
  await third.close();

  step("root closes its page: guest sees it leave");
  await root.close({ runBeforeUnload: false });
  await guest.waitForSelector('#users li[data-user="root"]', { state: "detached" });
  await guest.waitForSelector('#log li.event:has-text("disconnect")');
  const online = await guest.$$eval("#users li", (lis) => lis.map((li) => li.dataset.user));
  check(online.length === 1 && online[0] === "guest", `only guest is left: ${online}`);
});
