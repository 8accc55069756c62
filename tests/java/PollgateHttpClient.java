// A Java client that uses pollgate's extensions (docs/PROTOCOL.md) with java.net.http:
// the connection id in the X-Pollgate-Connection header (never in a URL), a POST form body for
// every action (so login credentials never travel in a URL), long-poll sync with `wait`,
// acknowledged sync with `ack` and the X-Pollgate-Seq header, idempotent send with `seq`, and
// a held poll woken by a packet from a second connector.
//
// Usage: java PollgateHttpClient <host:port | base URL>   (base URL default path /jWebSocket/http)
// Prints one line per step; exits 1 with a message on the first mismatch.
// No libraries: Java 17's javac/java only; compiled together with Json.java (the JSON reader).

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

public class PollgateHttpClient {
    static final String NS = "org.jwebsocket.plugins.system";
    static final String FRAME_SIZE_INFO =
            "{\"ns\":\"org.jwebsocket.msgctrl\",\"type\":\"info\",\"name\":\"maxFrameSize\",\"data\":1048840,\"jwsWrappedMsg\":true}";
    /** HTTP/1.1: the default (HTTP/2) would send an h2c upgrade offer on every plain request. */
    static final HttpClient HTTP =
            HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();

    final String name;
    final URI endpoint;
    /** The secret connection id: only ever sent in the X-Pollgate-Connection header. */
    final String connectionId;
    /** The last sequence number this client has received (and acknowledges on its next sync). */
    long acked = 0;
    String sourceId;

    PollgateHttpClient(String name, URI endpoint) {
        this.name = name;
        this.endpoint = endpoint;
        byte[] raw = new byte[16];
        new SecureRandom().nextBytes(raw);
        StringBuilder id = new StringBuilder();
        for (byte b : raw) {
            id.append(String.format("%02x", b));
        }
        this.connectionId = id.toString();
    }

    /** One response: status, body and pollgate's headers. */
    record Reply(int status, String body, HttpResponse<String> raw) {
        long seq() {
            String v = raw.headers().firstValue("X-Pollgate-Seq").orElse(null);
            expect(v != null, "no X-Pollgate-Seq header on " + raw.uri() + ": " + body);
            return Long.parseLong(v);
        }
    }

    /** A POST of `key, value, key, value...` as an urlencoded form, the id in the header. */
    HttpRequest request(String... pairs) {
        StringBuilder form = new StringBuilder();
        for (int k = 0; k < pairs.length; k += 2) {
            if (form.length() > 0) {
                form.append('&');
            }
            form.append(URLEncoder.encode(pairs[k], StandardCharsets.UTF_8)).append('=')
                    .append(URLEncoder.encode(pairs[k + 1], StandardCharsets.UTF_8));
        }
        return HttpRequest.newBuilder(endpoint)
                .timeout(Duration.ofSeconds(60))
                .header("X-Pollgate-Connection", connectionId)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString(form.toString()))
                .build();
    }

    CompletableFuture<Reply> postAsync(String... pairs) {
        return HTTP.sendAsync(request(pairs), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8))
                .thenApply(r -> new Reply(r.statusCode(), r.body(), r));
    }

    Reply post(String... pairs) throws Exception {
        return postAsync(pairs).get(90, TimeUnit.SECONDS);
    }

    /**
     * Checks a sync reply (200, a JSON array of strings) and parses its packets, leaving out
     * broadcast events (a server run with the shipped config sends them).
     */
    static List<Object> packets(String what, Reply r) {
        expect(r.status == 200, what + ": status " + r.status + " " + r.body);
        Object parsed = Json.parse(r.body);
        expect(parsed instanceof List, what + ": body is not a JSON array: " + r.body);
        List<Object> out = new ArrayList<>();
        for (Object p : (List<?>) parsed) {
            expect(p instanceof String, what + ": an entry is not a string: " + r.body);
            String s = (String) p;
            Object packet = s.equals("http.command.close") ? s : Json.parse(s);
            if (!(packet instanceof Map && "event".equals(((Map<?, ?>) packet).get("type")))) {
                out.add(packet);
            }
        }
        return out;
    }

    /** How many entries a sync body holds, events included (each has a sequence number). */
    static long count(Reply r) {
        return ((List<?>) Json.parse(r.body)).size();
    }

    /** A long-poll acknowledging everything received so far; advances `acked`. */
    List<Object> sync(long waitMs) throws Exception {
        Reply r = post("action", "sync", "wait", Long.toString(waitMs), "ack", Long.toString(acked));
        List<Object> out = packets(name + " sync", r);
        acked = r.seq();
        return out;
    }

    /** Opens and reads the welcome (the first packet, seq 1). */
    void open() throws Exception {
        Reply r = post("action", "open");
        expect(r.status == 200 && r.body.equals(FRAME_SIZE_INFO), name + " open: " + r.status + " " + r.body);
        List<Object> p = sync(5000);
        expect(p.size() == 1 && p.get(0) instanceof Map && "welcome".equals(((Map<?, ?>) p.get(0)).get("type")),
                name + " sync: expected the welcome: " + p);
        expect(acked == 1, name + " sync: the welcome is not seq 1: " + acked);
        sourceId = String.valueOf(((Map<?, ?>) p.get(0)).get("sourceId"));
    }

    /** Sends a token (form field `data`), with extra form fields such as `seq`. */
    Reply send(String token, String... extra) throws Exception {
        String[] pairs = new String[4 + extra.length];
        pairs[0] = "action";
        pairs[1] = "send";
        pairs[2] = "data";
        pairs[3] = token;
        System.arraycopy(extra, 0, pairs, 4, extra.length);
        return post(pairs);
    }

    static String sendTo(String target, String data, int utid) {
        return "{\"ns\":\"" + NS + "\",\"type\":\"send\",\"targetId\":\"" + target + "\",\"data\":\"" + data
                + "\",\"utid\":" + utid + "}";
    }

    static void expect(boolean ok, String message) {
        if (!ok) {
            System.out.println("FAIL " + message);
            System.exit(1);
        }
    }

    static Map<?, ?> object(String what, Reply r) {
        expect(r.status == 200, what + ": status " + r.status + " " + r.body);
        Object o;
        try {
            o = Json.parse(r.body);
        } catch (RuntimeException e) {
            o = null;
        }
        expect(o instanceof Map, what + ": body is not a JSON object: " + r.body);
        return (Map<?, ?>) o;
    }

    /** Checks a token response: `reqType`, `code` and `utid`. */
    static Map<?, ?> response(String what, Reply r, String reqType, int code, int utid) {
        Map<?, ?> m = object(what, r);
        expect("response".equals(m.get("type")) && reqType.equals(m.get("reqType"))
                && Long.valueOf(code).equals(m.get("code")) && Long.valueOf(utid).equals(m.get("utid")),
                what + ": expected a " + reqType + " response, code " + code + ", utid " + utid + ": " + r.body);
        return m;
    }

    /** The `data` fields of packets, in order. */
    static List<Object> data(List<Object> packets) {
        List<Object> out = new ArrayList<>();
        for (Object p : packets) {
            out.add(p instanceof Map ? ((Map<?, ?>) p).get("data") : p);
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        // Output in UTF-8 whatever the locale (Java 17 would print '?' for non-ASCII under LANG=C).
        System.setOut(new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8));
        if (args.length != 1) {
            System.out.println("usage: java PollgateHttpClient <host:port | base URL>");
            System.exit(2);
        }
        URI endpoint = URI.create(args[0].contains("://") ? args[0] : "http://" + args[0] + "/jWebSocket/http");
        PollgateHttpClient a = new PollgateHttpClient("A", endpoint);
        PollgateHttpClient b = new PollgateHttpClient("B", endpoint);

        // open: the id travels in the header only; the welcome is seq 1.
        a.open();
        System.out.println("ok A open (id in X-Pollgate-Connection): welcome seq 1, sourceId " + a.sourceId);

        // acknowledged sync: a response that is lost is simply asked for again with the same ack.
        Reply again = a.post("action", "sync", "ack", "0");
        List<Object> p = packets("A sync ack=0 again", again);
        expect(p.size() == 1 && "welcome".equals(((Map<?, ?>) p.get(0)).get("type")) && again.seq() == 1,
                "A sync ack=0 again: the welcome is not re-served: " + again.body);
        Reply acked = a.post("action", "sync", "ack", "1");
        expect(packets("A sync ack=1", acked).isEmpty() && acked.seq() == 1,
                "A sync ack=1: expected [] with X-Pollgate-Seq 1: " + acked.body);
        System.out.println("ok A acknowledged sync: welcome re-served with ack=0, gone after ack=1");

        // login in a POST body: credentials never in a URL.
        Reply r = a.post("action", "login", "username", "guest", "password", "guest");
        Map<?, ?> m = response("A login", r, "login", 0, 0);
        expect("guest".equals(m.get("username")), "A login: " + r.body);
        m = object("A whoami", a.post("action", "whoami"));
        expect("guest".equals(m.get("username")) && a.sourceId.equals(m.get("sourceId")), "A whoami: " + m);
        System.out.println("ok A login (POST form) and whoami: guest");

        b.open();
        System.out.println("ok B open: sourceId " + b.sourceId);

        // long-poll: B's poll is held (empty queue) until A's packet arrives, then answers it.
        CompletableFuture<Reply> held = b.postAsync("action", "sync", "wait", "20000", "ack", Long.toString(b.acked));
        Thread.sleep(500);
        expect(!held.isDone(), "B's long-poll answered before anything was queued: " + (held.isDone() ? held.get().body : ""));
        r = a.send(sendTo(b.sourceId, "wake up", 10));
        response("A send to B", r, "send", 0, 10);
        Reply woken = held.get(30, TimeUnit.SECONDS);
        p = packets("B held sync", woken);
        expect(data(p).equals(List.of("wake up")), "B held sync: expected A's packet, got " + woken.body);
        m = (Map<?, ?>) p.get(0);
        expect(a.sourceId.equals(m.get("sourceId")) && "send".equals(m.get("type")), "B held sync: " + m);
        expect(woken.seq() == b.acked + count(woken), "B held sync: X-Pollgate-Seq " + woken.seq() + " after " + b.acked);
        b.acked = woken.seq();
        System.out.println("ok B long-poll woken by A's send: \"wake up\" from " + a.sourceId);

        // idempotent send: a retry with the same seq gets the stored response and is not run
        // again, even with a different payload; a new seq runs.
        Reply first = a.send(sendTo(b.sourceId, "once", 11), "seq", "1");
        response("A send seq=1", first, "send", 0, 11);
        Reply retry = a.send(sendTo(b.sourceId, "once", 11), "seq", "1");
        expect(retry.status == 200 && retry.body.equals(first.body), "A retry seq=1: " + retry.status + " " + retry.body);
        Reply changed = a.send(sendTo(b.sourceId, "twice", 12), "seq", "1");
        expect(changed.status == 200 && changed.body.equals(first.body),
                "A seq=1 with other data: not the stored response: " + changed.body);
        r = a.send(sendTo(b.sourceId, "second", 13), "seq", "2");
        response("A send seq=2", r, "send", 0, 13);
        long before = b.acked;
        p = b.sync(5000);
        expect(data(p).equals(List.of("once", "second")), "B sync: expected [once, second] once each, got " + data(p));
        expect(b.acked >= before + 2, "B sync: X-Pollgate-Seq " + b.acked + " after " + before);
        System.out.println("ok A idempotent send: seq=1 sent 3 times, B got [once, second]");

        // logout and close, both as POST: the close body is the close command, the connector is
        // gone (sync answers [], a POST 411).
        r = a.post("action", "logout");
        response("A logout", r, "logout", 0, 0);
        r = a.post("action", "close");
        expect(r.status == 200 && r.body.equals("http.command.close"), "A close: " + r.status + " " + r.body);
        Reply gone = a.post("action", "sync", "wait", "5000", "ack", Long.toString(a.acked));
        expect(packets("A sync after close", gone).isEmpty(), "A sync after close: expected [], got " + gone.body);
        r = a.send(sendTo(b.sourceId, "late", 14));
        expect(r.status == 411 && r.body.equals("Invalid connection state!"), "A send after close: " + r.status + " " + r.body);
        System.out.println("ok A logout, close: http.command.close, then sync [] and POST 411");

        // a server-side close wakes a held poll: B polls, then sends the system `close` token on
        // a second request; the poll answers the close command with its reason.
        b.acked = b.post("action", "sync", "ack", Long.toString(b.acked)).seq(); // drains events, if any
        held = b.postAsync("action", "sync", "wait", "20000", "ack", Long.toString(b.acked));
        Thread.sleep(500);
        expect(!held.isDone(), "B's second long-poll answered before anything was queued");
        r = b.send("{\"ns\":\"" + NS + "\",\"type\":\"close\"}");
        expect(r.status == 200 && r.body.isEmpty(), "B close token: expected an empty 200, got " + r.status + " " + r.body);
        Reply closed = held.get(30, TimeUnit.SECONDS);
        expect(packets("B held sync", closed).equals(List.of("http.command.close")), "B held sync: " + closed.body);
        String reason = closed.raw.headers().firstValue("X-Pollgate-Close-Reason").orElse("");
        expect(reason.equals("client"), "B held sync: X-Pollgate-Close-Reason is '" + reason + "'");
        expect(closed.seq() == b.acked + count(closed), "B held sync: X-Pollgate-Seq " + closed.seq() + " after " + b.acked);
        System.out.println("ok B long-poll woken by its close token: [\"http.command.close\"], reason client");

        // the close stays until acknowledged: the same ack re-serves it, the next ack clears it.
        Reply resend = b.post("action", "sync", "ack", Long.toString(b.acked));
        expect(packets("B sync same ack", resend).equals(List.of("http.command.close")),
                "B sync with the same ack: the close is not re-served: " + resend.body);
        Reply done = b.post("action", "sync", "ack", Long.toString(closed.seq()));
        expect(packets("B sync ack close", done).isEmpty(), "B sync acknowledging the close: " + done.body);
        System.out.println("ok B close re-served until acknowledged, then []");
        System.out.println("PASS");
    }
}
