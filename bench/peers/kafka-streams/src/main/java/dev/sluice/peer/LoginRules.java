package dev.sluice.peer;

import java.util.Locale;

/**
 * The rules of sluice's `topologies/user_login.rs`, the same checks and the
 * same canonical forms: a UUID user id, an IPv4 or IPv6 address, a plausible
 * timestamp, a device type that is not blank.
 */
final class LoginRules {
    private LoginRules() {}

    /** 2000-01-01T00:00:00Z. */
    static final long EARLIEST = 946_684_800L;
    static final long MAX_AHEAD_SECS = 24 * 3600;

    /** Why a login is refused, or null when it passes. */
    static String refusal(String userId, String ip, long timestamp, String deviceType, long nowSecs) {
        if (uuid(userId) == null) {
            return "user_id \"" + userId + "\" is not a UUID";
        }
        if (!Ip.isValid(ip)) {
            return "ip \"" + ip + "\" is not an IPv4 or IPv6 address";
        }
        if (timestamp < EARLIEST || timestamp > nowSecs + MAX_AHEAD_SECS) {
            return "timestamp " + timestamp + " is not plausible (before 2000 or more than a day ahead)";
        }
        if (deviceType.strip().isEmpty()) {
            return "device_type is empty";
        }
        return null;
    }

    /**
     * The lower-case hyphenated form of a UUID written hyphenated, simple (32
     * hex digits), braced or as a urn:uuid: URN, as the uuid crate reads them;
     * null for anything else. java.util.UUID.fromString is not used: it takes
     * "1-1-1-1-1".
     */
    static String uuid(String s) {
        String body = s;
        if (body.length() == 45 && body.regionMatches(true, 0, "urn:uuid:", 0, 9)) {
            body = body.substring(9);
        } else if (body.length() == 38 && body.charAt(0) == '{' && body.charAt(37) == '}') {
            body = body.substring(1, 37);
        }
        StringBuilder hex = new StringBuilder(32);
        if (body.length() == 36) {
            for (int i = 0; i < 36; i++) {
                char c = body.charAt(i);
                boolean dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash != (c == '-')) {
                    return null;
                }
                if (!dash) {
                    hex.append(c);
                }
            }
        } else if (body.length() == 32 && body == s) {
            hex.append(body);
        } else {
            return null;
        }
        for (int i = 0; i < 32; i++) {
            if (Character.digit(hex.charAt(i), 16) < 0) {
                return null;
            }
        }
        String h = hex.toString().toLowerCase(Locale.ROOT);
        return h.substring(0, 8) + "-" + h.substring(8, 12) + "-" + h.substring(12, 16) + "-"
                + h.substring(16, 20) + "-" + h.substring(20);
    }

    static String deviceType(String s) {
        return s.strip().toLowerCase(Locale.ROOT);
    }
}
