package dev.sluice.peer;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.avro.Schema;

/**
 * The few Confluent Schema Registry calls the peer needs, over plain HTTP:
 * Confluent's own serdes are not on Maven Central, and these two requests are
 * all a generic Avro serde asks of the registry.
 */
final class Registry {
    private final HttpClient http = HttpClient.newHttpClient();
    private final String base;
    private final String auth;
    private final Map<Integer, Schema> byId = new ConcurrentHashMap<>();

    Registry(String url) {
        URI uri = URI.create(url);
        String info = uri.getUserInfo();
        this.auth = info == null ? null
                : "Basic " + Base64.getEncoder().encodeToString(info.getBytes(StandardCharsets.UTF_8));
        String stripped = info == null ? url : url.replace(info + "@", "");
        this.base = stripped.endsWith("/") ? stripped.substring(0, stripped.length() - 1) : stripped;
    }

    /** The writer schema of a record's id, fetched once. */
    Schema schema(int id) throws IOException {
        Schema known = byId.get(id);
        if (known != null) {
            return known;
        }
        String body = get("/schemas/ids/" + id);
        Schema parsed = new Schema.Parser().parse(field(body, "schema"));
        byId.put(id, parsed);
        return parsed;
    }

    /** The id and schema registered last under a subject, e.g. `processed-user-login-value`. */
    Map.Entry<Integer, Schema> latest(String subject) throws IOException {
        String body = get("/subjects/" + subject + "/versions/latest");
        Matcher id = Pattern.compile("\"id\"\\s*:\\s*(\\d+)").matcher(body);
        if (!id.find()) {
            throw new IOException("no id in the registry's answer for " + subject + ": " + body);
        }
        return Map.entry(Integer.parseInt(id.group(1)), new Schema.Parser().parse(field(body, "schema")));
    }

    private String get(String path) throws IOException {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(base + path))
                .header("Accept", "application/vnd.schemaregistry.v1+json");
        if (auth != null) {
            request.header("Authorization", auth);
        }
        try {
            HttpResponse<String> response = http.send(request.build(), HttpResponse.BodyHandlers.ofString());
            if (response.statusCode() != 200) {
                throw new IOException("registry " + path + ": HTTP " + response.statusCode() + " " + response.body());
            }
            return response.body();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted asking the registry for " + path, e);
        }
    }

    /** A JSON string field, unescaped: the registry's answers are flat objects. */
    static String field(String json, String name) throws IOException {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        if (!m.find()) {
            throw new IOException("no \"" + name + "\" in the registry's answer: " + json);
        }
        String s = m.group(1);
        StringBuilder out = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char e = s.charAt(++i);
            switch (e) {
                case 'n' -> out.append('\n');
                case 't' -> out.append('\t');
                case 'r' -> out.append('\r');
                case 'b' -> out.append('\b');
                case 'f' -> out.append('\f');
                case 'u' -> {
                    out.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16));
                    i += 4;
                }
                default -> out.append(e);
            }
        }
        return out.toString();
    }
}
