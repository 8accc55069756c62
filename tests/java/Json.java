// A small JSON reader shared by the Java interop programs (JwsHttpClient, PollgateHttpClient),
// compiled with each of them by tests/java_interop.rs. Java 17, no libraries.

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** A small JSON reader: objects (insertion-ordered maps), lists, strings, longs, doubles, booleans, null. */
final class Json {
    final String s;
    int i = 0;

    Json(String s) {
        this.s = s;
    }

    static Object parse(String s) {
        Json j = new Json(s);
        Object v = j.value();
        j.ws();
        if (j.i != s.length()) {
            throw new IllegalArgumentException("trailing characters at " + j.i + " in " + s);
        }
        return v;
    }

    void ws() {
        while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
            i++;
        }
    }

    IllegalArgumentException err(String what) {
        return new IllegalArgumentException(what + " at " + i + " in " + s);
    }

    Object value() {
        ws();
        if (i >= s.length()) {
            throw err("unexpected end");
        }
        char ch = s.charAt(i);
        if (ch == '{') {
            Map<String, Object> m = new LinkedHashMap<>();
            i++;
            ws();
            if (s.charAt(i) == '}') {
                i++;
                return m;
            }
            while (true) {
                ws();
                String k = string();
                ws();
                if (s.charAt(i++) != ':') {
                    throw err("expected ':'");
                }
                m.put(k, value());
                ws();
                char c2 = s.charAt(i++);
                if (c2 == '}') {
                    return m;
                }
                if (c2 != ',') {
                    throw err("expected ',' or '}'");
                }
            }
        }
        if (ch == '[') {
            List<Object> l = new ArrayList<>();
            i++;
            ws();
            if (s.charAt(i) == ']') {
                i++;
                return l;
            }
            while (true) {
                l.add(value());
                ws();
                char c2 = s.charAt(i++);
                if (c2 == ']') {
                    return l;
                }
                if (c2 != ',') {
                    throw err("expected ',' or ']'");
                }
            }
        }
        if (ch == '"') {
            return string();
        }
        if (s.startsWith("true", i)) {
            i += 4;
            return Boolean.TRUE;
        }
        if (s.startsWith("false", i)) {
            i += 5;
            return Boolean.FALSE;
        }
        if (s.startsWith("null", i)) {
            i += 4;
            return null;
        }
        int start = i;
        while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
            i++;
        }
        String num = s.substring(start, i);
        if (num.isEmpty()) {
            throw err("unexpected character");
        }
        if (num.contains(".") || num.contains("e") || num.contains("E")) {
            return Double.parseDouble(num);
        }
        return Long.parseLong(num);
    }

    String string() {
        if (s.charAt(i) != '"') {
            throw err("expected a string");
        }
        i++;
        StringBuilder sb = new StringBuilder();
        while (true) {
            char ch = s.charAt(i++);
            if (ch == '"') {
                return sb.toString();
            }
            if (ch != '\\') {
                sb.append(ch);
                continue;
            }
            char e = s.charAt(i++);
            switch (e) {
                case 'n' -> sb.append('\n');
                case 't' -> sb.append('\t');
                case 'r' -> sb.append('\r');
                case 'b' -> sb.append('\b');
                case 'f' -> sb.append('\f');
                case 'u' -> {
                    sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                    i += 4;
                }
                default -> sb.append(e);
            }
        }
    }
}
