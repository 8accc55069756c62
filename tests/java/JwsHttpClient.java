// A Java client that talks to pollgate exactly the way jWebSocket 1.0's JWebSocketHTTPClient
// does: every action is a GET through java.net.HttpURLConnection, the URL is built by string
// concatenation (`base + "?connectionId=" + id` then `"&action=..."`) and `new URL(...)`, and a
// token travels as raw, unencoded JSON in the query string (`&action=send&data={"ns":...}`).
// Login, echo, send, getClients and logout are tokens, as JWebSocketTokenClient sends them.
//
// Usage: java JwsHttpClient <host:port | base URL>   (base URL default path /jWebSocket/http)
// Prints one line per step; exits 1 with a message on the first mismatch.
// No libraries: Java 17's javac/java only; compiled together with Json.java (the JSON reader).

import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public class JwsHttpClient {
    static final String NS = "org.jwebsocket.plugins.system";
    static final String FRAME_SIZE_INFO =
            "{\"ns\":\"org.jwebsocket.msgctrl\",\"type\":\"info\",\"name\":\"maxFrameSize\",\"data\":1048840,\"jwsWrappedMsg\":true}";

    /** `base?connectionId=C`: what JWebSocketHTTPClient keeps as mURI. */
    final String uri;
    int utid = 0;

    JwsHttpClient(String base, String connectionId) {
        this.uri = base + "?connectionId=" + connectionId;
    }

    /** One response: status and body text. */
    record Reply(int status, String body) {}

    /**
     * GET `uri + query`, built as JWebSocketHTTPClient.getHttpConnection builds it: plain
     * concatenation, no encoding. The body is read as UTF-8 (the original used the platform
     * charset) and also for error statuses (the original threw on them).
     */
    Reply get(String query) throws IOException {
        HttpURLConnection c = (HttpURLConnection) new URL(uri + query).openConnection();
        c.setRequestMethod("GET");
        c.setConnectTimeout(10_000);
        c.setReadTimeout(30_000);
        int status = c.getResponseCode();
        InputStream in = status < 400 ? c.getInputStream() : c.getErrorStream();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        if (in != null) {
            in.transferTo(out);
            in.close();
        }
        return new Reply(status, out.toString(StandardCharsets.UTF_8));
    }

    /** JWebSocketTokenClient.sendToken: a utid is added, then `&action=send&data=` + raw JSON. */
    Reply sendToken(String fieldsWithoutUtid) throws IOException {
        utid++;
        String json = "{" + fieldsWithoutUtid + ",\"utid\":" + utid + "}";
        return get("&action=send&data=" + json);
    }

    /** A sync: the packets (JSON inside JSON strings), each parsed when it is JSON. */
    List<Object> sync() throws IOException {
        Reply r = get("&action=sync");
        expect(r.status == 200, "sync: status " + r.status + " " + r.body);
        Object parsed = Json.parse(r.body);
        expect(parsed instanceof List, "sync: body is not a JSON array: " + r.body);
        List<Object> out = new ArrayList<>();
        for (Object p : (List<?>) parsed) {
            expect(p instanceof String, "sync: an entry is not a string: " + r.body);
            String s = (String) p;
            out.add(s.equals("http.command.close") ? s : Json.parse(s));
        }
        return out;
    }

    /** Syncs, leaving out broadcast events (a server run with the shipped config sends them). */
    List<Object> syncNoEvents() throws IOException {
        List<Object> out = new ArrayList<>();
        for (Object p : sync()) {
            if (!(p instanceof Map && "event".equals(((Map<?, ?>) p).get("type")))) {
                out.add(p);
            }
        }
        return out;
    }

    static void expect(boolean ok, String message) {
        if (!ok) {
            System.out.println("FAIL " + message);
            System.exit(1);
        }
    }

    static Map<?, ?> object(String what, String body) {
        Object o;
        try {
            o = Json.parse(body);
        } catch (RuntimeException e) {
            o = null;
        }
        expect(o instanceof Map, what + ": body is not a JSON object: " + body);
        return (Map<?, ?>) o;
    }

    /** Checks the response envelope of a token: type, code, ns, reqType, utid. */
    static Map<?, ?> response(String what, Reply r, int code, String reqType, int utid) {
        expect(r.status == 200, what + ": status " + r.status + " " + r.body);
        Map<?, ?> m = object(what, r.body);
        expect("response".equals(m.get("type")) && NS.equals(m.get("ns")) && reqType.equals(m.get("reqType")),
                what + ": not a " + reqType + " response: " + r.body);
        expect(Long.valueOf(code).equals(m.get("code")), what + ": code is not " + code + ": " + r.body);
        expect(Long.valueOf(utid).equals(m.get("utid")), what + ": utid is not " + utid + ": " + r.body);
        return m;
    }

    static String md5Hex(String s) throws Exception {
        StringBuilder sb = new StringBuilder();
        for (byte b : MessageDigest.getInstance("MD5").digest(s.getBytes(StandardCharsets.UTF_8))) {
            sb.append(String.format("%02x", b));
        }
        return sb.toString();
    }

    static String baseUrl(String arg) {
        if (arg.contains("://")) {
            return arg;
        }
        return "http://" + arg + "/jWebSocket/http";
    }

    public static void main(String[] args) throws Exception {
        // Output in UTF-8 whatever the locale (Java 17 would print '?' for non-ASCII under LANG=C).
        System.setOut(new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8));
        if (args.length != 1) {
            System.out.println("usage: java JwsHttpClient <host:port | base URL>");
            System.exit(2);
        }
        String base = baseUrl(args[0]);
        byte[] raw = new byte[16];
        new SecureRandom().nextBytes(raw);
        StringBuilder id = new StringBuilder();
        for (byte b : raw) {
            id.append(String.format("%02x", b));
        }
        JwsHttpClient c = new JwsHttpClient(base, id.toString());

        // open: the body is the frame-size control message; the welcome waits for sync.
        Reply r = c.get("&action=open");
        expect(r.status == 200 && r.body.equals(FRAME_SIZE_INFO), "open: got " + r.status + " " + r.body);
        System.out.println("ok open: maxFrameSize info message");

        // sync: the welcome, naming this connection md5(connectionId + client ip).
        List<Object> packets = c.syncNoEvents();
        expect(packets.size() == 1 && packets.get(0) instanceof Map, "sync: expected the welcome only: " + packets);
        Map<?, ?> welcome = (Map<?, ?>) packets.get(0);
        expect("welcome".equals(welcome.get("type")) && NS.equals(welcome.get("ns")), "sync: not a welcome: " + welcome);
        expect("anonymous".equals(welcome.get("username")), "welcome: username is not anonymous: " + welcome);
        expect(Long.valueOf(1048840).equals(welcome.get("maxFrameSize")), "welcome: maxFrameSize: " + welcome);
        String sourceId = String.valueOf(welcome.get("sourceId"));
        expect(sourceId.matches("[0-9a-f]{32}"), "welcome: sourceId is not an md5: " + sourceId);
        String host = new URL(base).getHost();
        if (host.equals("127.0.0.1")) {
            expect(sourceId.equals(md5Hex(id + host)), "welcome: sourceId is not md5(connectionId + 127.0.0.1)");
        }
        System.out.println("ok sync: welcome, sourceId " + sourceId);

        // login, as JWebSocketTokenClient.login sends it: a token with the password in the URL.
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"login\",\"username\":\"guest\",\"password\":\"guest\"");
        Map<?, ?> m = response("login", r, 0, "login", c.utid);
        expect("guest".equals(m.get("username")) && m.get("authorities") instanceof List,
                "login: no username/authorities: " + r.body);
        System.out.println("ok login: guest, " + ((List<?>) m.get("authorities")).size() + " authorities");

        // echo: raw JSON with quotes, braces, colons, spaces, non-ASCII and <> straight in the URL.
        String text = "REST: {\\\"quoted\\\"} <é€>";
        String expected = "REST: {\"quoted\"} <é€>";
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"echo\",\"data\":\"" + text + "\"");
        m = response("echo", r, 0, "echo", c.utid);
        expect(expected.equals(m.get("data")), "echo: data came back as " + m.get("data") + ", sent " + expected);
        System.out.println("ok echo: " + expected);

        // send to itself: the delivered token is the body (the first packet produced for this
        // connector), the send's own response is queued for the next sync.
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"send\",\"targetId\":\"" + sourceId + "\",\"sourceId\":\""
                + sourceId + "\",\"sender\":\"guest\",\"data\":\"hi-self\"");
        int sendUtid = c.utid;
        expect(r.status == 200, "send: status " + r.status + " " + r.body);
        m = object("send", r.body);
        expect("send".equals(m.get("type")) && "hi-self".equals(m.get("data")) && sourceId.equals(m.get("sourceId")),
                "send: the body is not the delivered token: " + r.body);
        System.out.println("ok send to itself: the delivered token is the body");

        packets = c.syncNoEvents();
        expect(packets.size() == 1 && packets.get(0) instanceof Map, "sync after send: " + packets);
        m = (Map<?, ?>) packets.get(0);
        expect("response".equals(m.get("type")) && "send".equals(m.get("reqType"))
                && Long.valueOf(0).equals(m.get("code")) && Long.valueOf(sendUtid).equals(m.get("utid")),
                "sync after send: not the send response: " + m);
        System.out.println("ok sync: the queued send response");

        // getClients: the real list (docs/PROTOCOL.md, "Differences from jWebSocket's system plugin"), this client included.
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"getClients\",\"mode\":0");
        m = response("getClients", r, 0, "getClients", c.utid);
        Object clients = m.get("clients");
        expect(clients instanceof List && ((List<?>) clients).contains("guest@" + sourceId),
                "getClients: guest@" + sourceId + " missing: " + r.body);
        expect(Long.valueOf(((List<?>) clients).size()).equals(m.get("count")), "getClients: count: " + r.body);
        System.out.println("ok getClients: " + clients);

        // logout.
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"logout\"");
        response("logout", r, 0, "logout", c.utid);
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"logout\"");
        m = response("logout again", r, -1, "logout", c.utid);
        expect("not authenticated".equals(m.get("msg")), "logout again: " + r.body);
        System.out.println("ok logout");

        // close (JWebSocketHTTPClient.close): the body is the close command; the connector and
        // its queue are gone, so a sync answers [] and any other action 400.
        r = c.get("&action=close");
        expect(r.status == 200 && r.body.equals("http.command.close"), "close: got " + r.status + " " + r.body);
        System.out.println("ok close: http.command.close");
        packets = c.sync();
        expect(packets.isEmpty(), "sync after close: expected [], got " + packets);
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"echo\",\"data\":\"late\"");
        expect(r.status == 400 && r.body.equals("Invalid connection state!"), "send after close: " + r.status + " " + r.body);
        System.out.println("ok after close: sync [], send 400 Invalid connection state!");

        // A server-side close reaches the client through sync, where JWebSocketHTTPClient.sync
        // looks for it: open again with the same connection id, then send the `close` token.
        r = c.get("&action=open");
        expect(r.status == 200 && r.body.equals(FRAME_SIZE_INFO), "open again: got " + r.status + " " + r.body);
        packets = c.syncNoEvents();
        expect(packets.size() == 1 && sourceId.equals(((Map<?, ?>) packets.get(0)).get("sourceId")),
                "sync after open again: expected the welcome with the same sourceId: " + packets);
        System.out.println("ok open again with the same connectionId: same sourceId");
        r = c.sendToken("\"ns\":\"" + NS + "\",\"type\":\"close\"");
        expect(r.status == 200 && r.body.isEmpty(), "close token: expected an empty 200, got " + r.status + " " + r.body);
        packets = c.sync();
        expect(packets.equals(List.of("http.command.close")), "sync after the close token: " + packets);
        System.out.println("ok close token: sync [\"http.command.close\"]");
        System.out.println("PASS");
    }
}
