package dev.sluice.peer;

/**
 * IP address text as Rust's std reads and writes it (which sluice uses):
 * strict dotted-quad IPv4 (no leading zeros), IPv6 with at most one `::` and
 * an optional dotted IPv4 tail, written back in RFC 5952 form. Hand-written
 * because InetAddress.getByName resolves names that are not literals, and
 * accepts forms ("1.2.3", "[::1]", zone ids) that std refuses.
 */
final class Ip {
    private Ip() {}

    static boolean isValid(String ip) {
        return ipv4(ip) != null || ipv6(ip) != null;
    }

    /** Kept as it is unless it is IPv6, which is rewritten in RFC 5952 form. */
    static String canonical(String ip) {
        if (ip.indexOf(':') < 0) {
            return ip;
        }
        int[] groups = ipv6(ip);
        return groups == null ? ip : rfc5952(groups);
    }

    static int[] ipv4(String s) {
        String[] parts = s.split("\\.", -1);
        if (parts.length != 4) {
            return null;
        }
        int[] octets = new int[4];
        for (int i = 0; i < 4; i++) {
            String p = parts[i];
            if (p.isEmpty() || p.length() > 3 || (p.length() > 1 && p.charAt(0) == '0')) {
                return null;
            }
            int v = 0;
            for (int j = 0; j < p.length(); j++) {
                char c = p.charAt(j);
                if (c < '0' || c > '9') {
                    return null;
                }
                v = v * 10 + (c - '0');
            }
            if (v > 255) {
                return null;
            }
            octets[i] = v;
        }
        return octets;
    }

    /** Eight 16-bit groups, or null. */
    static int[] ipv6(String s) {
        int gap = s.indexOf("::");
        if (gap >= 0 && s.indexOf("::", gap + 1) >= 0) {
            return null;
        }
        String head = gap >= 0 ? s.substring(0, gap) : s;
        String tail = gap >= 0 ? s.substring(gap + 2) : "";
        int[] h = groups(head, gap < 0);
        int[] t = gap >= 0 ? groups(tail, true) : new int[0];
        if (h == null || t == null) {
            return null;
        }
        int n = h.length + t.length;
        if (gap >= 0 ? n > 7 : n != 8) {
            return null;
        }
        int[] out = new int[8];
        System.arraycopy(h, 0, out, 0, h.length);
        System.arraycopy(t, 0, out, 8 - t.length, t.length);
        return out;
    }

    /** Colon-separated hex groups; the last may be a dotted IPv4 address when `last` says it ends the text. */
    private static int[] groups(String s, boolean last) {
        if (s.isEmpty()) {
            return new int[0];
        }
        String[] parts = s.split(":", -1);
        int[] out = new int[parts.length + 1];
        int n = 0;
        for (int i = 0; i < parts.length; i++) {
            String p = parts[i];
            if (last && i == parts.length - 1 && p.indexOf('.') >= 0) {
                int[] v4 = ipv4(p);
                if (v4 == null) {
                    return null;
                }
                out[n++] = v4[0] << 8 | v4[1];
                out[n++] = v4[2] << 8 | v4[3];
                continue;
            }
            if (p.isEmpty() || p.length() > 4) {
                return null;
            }
            int v = 0;
            for (int j = 0; j < p.length(); j++) {
                int d = Character.digit(p.charAt(j), 16);
                if (d < 0 || p.charAt(j) > 'f') {
                    return null;
                }
                v = v << 4 | d;
            }
            out[n++] = v;
        }
        return java.util.Arrays.copyOf(out, n);
    }

    /** As Rust's Display writes it: IPv4-mapped addresses with a dotted tail, else the longest zero run as `::`. */
    static String rfc5952(int[] g) {
        boolean mapped = g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 0 && g[4] == 0 && g[5] == 0xffff;
        if (mapped) {
            return "::ffff:" + (g[6] >> 8) + "." + (g[6] & 0xff) + "." + (g[7] >> 8) + "." + (g[7] & 0xff);
        }
        int bestStart = 0, bestLen = 0, runStart = 0, runLen = 0;
        for (int i = 0; i < 8; i++) {
            if (g[i] != 0) {
                runLen = 0;
                continue;
            }
            if (runLen == 0) {
                runStart = i;
            }
            runLen++;
            if (runLen > bestLen) {
                bestStart = runStart;
                bestLen = runLen;
            }
        }
        StringBuilder out = new StringBuilder(39);
        if (bestLen > 1) {
            hex(out, g, 0, bestStart);
            out.append("::");
            hex(out, g, bestStart + bestLen, 8);
        } else {
            hex(out, g, 0, 8);
        }
        return out.toString();
    }

    private static void hex(StringBuilder out, int[] g, int from, int to) {
        for (int i = from; i < to; i++) {
            if (i > from) {
                out.append(':');
            }
            out.append(Integer.toHexString(g[i]));
        }
    }
}
