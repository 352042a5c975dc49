"""The Quix Streams peer of `sluice bench --compare`: sluice's user-login
topology in Quix Streams 3 — decode the Confluent-wire Avro login, check it
with sluice's rules (topologies/user_login.rs; the Kafka Streams peer's
LoginRules.java and Ip.java), normalise it, key it by the user id, write it
to the output; a refused record goes to the dead-letter topic as it came,
with sluice's reason headers. Runs until SIGTERM.

Avro is read and written with fastavro against the registry's schemas (what
Quix's own Avro serdes use underneath), so that a record that does not
decode is dead-lettered with its reason instead of stopping the app.
"""

import argparse
import io
import json
import sys
import time
import urllib.request
import warnings

# Quix Streams imports authlib, which warns about its own httpx module on
# import: nothing this peer uses.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

import fastavro  # noqa: E402
from quixstreams import Application  # noqa: E402
from quixstreams.models.serializers import BytesDeserializer, Serializer  # noqa: E402

EARLIEST = 946_684_800  # 2000-01-01T00:00:00Z
MAX_AHEAD_SECS = 24 * 3600
HEX = set("0123456789abcdefABCDEF")


def uuid(s):
    """The lower-case hyphenated form of a UUID written hyphenated, simple,
    braced or as a urn:uuid: URN, as the uuid crate reads them; else None."""
    body = s
    if len(body) == 45 and body[:9].lower() == "urn:uuid:":
        body = body[9:]
    elif len(body) == 38 and body[0] == "{" and body[37] == "}":
        body = body[1:37]
    if len(body) == 36:
        if any((c == "-") != (i in (8, 13, 18, 23)) for i, c in enumerate(body)):
            return None
        hexits = body.replace("-", "")
    elif len(body) == 32 and body is s:
        hexits = body
    else:
        return None
    if not all(c in HEX for c in hexits):
        return None
    h = hexits.lower()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def ipv4(s):
    parts = s.split(".")
    if len(parts) != 4:
        return None
    out = []
    for p in parts:
        if not p or len(p) > 3 or (len(p) > 1 and p[0] == "0") or not all("0" <= c <= "9" for c in p):
            return None
        v = int(p)
        if v > 255:
            return None
        out.append(v)
    return out


def groups(s, last):
    if not s:
        return []
    parts = s.split(":")
    out = []
    for i, p in enumerate(parts):
        if last and i == len(parts) - 1 and "." in p:
            v4 = ipv4(p)
            if v4 is None:
                return None
            out += [v4[0] << 8 | v4[1], v4[2] << 8 | v4[3]]
            continue
        if not p or len(p) > 4 or not all(c in HEX for c in p):
            return None
        out.append(int(p, 16))
    return out


def ipv6(s):
    """Eight 16-bit groups as Rust's std reads IPv6 text, or None."""
    gap = s.find("::")
    if gap >= 0 and s.find("::", gap + 1) >= 0:
        return None
    head, tail = (s[:gap], s[gap + 2 :]) if gap >= 0 else (s, "")
    h = groups(head, gap < 0)
    t = groups(tail, True) if gap >= 0 else []
    if h is None or t is None:
        return None
    n = len(h) + len(t)
    if (n > 7) if gap >= 0 else (n != 8):
        return None
    return h + [0] * (8 - n) + t


def canonical_ip(ip):
    """IPv4 as it is; IPv6 in RFC 5952 form, as Rust's Display writes it."""
    if ":" not in ip:
        return ip
    g = ipv6(ip)
    if g is None:
        return ip
    if g[:5] == [0] * 5 and g[5] == 0xFFFF:
        return f"::ffff:{g[6] >> 8}.{g[6] & 0xFF}.{g[7] >> 8}.{g[7] & 0xFF}"
    best_start, best_len, run_start, run_len = 0, 0, 0, 0
    for i, v in enumerate(g):
        if v != 0:
            run_len = 0
            continue
        if run_len == 0:
            run_start = i
        run_len += 1
        if run_len > best_len:
            best_start, best_len = run_start, run_len
    hexes = [format(v, "x") for v in g]
    if best_len > 1:
        return ":".join(hexes[:best_start]) + "::" + ":".join(hexes[best_start + best_len :])
    return ":".join(hexes)


def refusal(login, now_secs):
    """Why a login is refused, or None when it passes."""
    if uuid(login["user_id"]) is None:
        return f'user_id "{login["user_id"]}" is not a UUID'
    ip = login["ip"]
    if ipv4(ip) is None and ipv6(ip) is None:
        return f'ip "{ip}" is not an IPv4 or IPv6 address'
    ts = login["timestamp"]
    if ts < EARLIEST or ts > now_secs + MAX_AHEAD_SECS:
        return f"timestamp {ts} is not plausible (before 2000 or more than a day ahead)"
    if not login["device_type"].strip():
        return "device_type is empty"
    return None


class Registry:
    """Schemas by id and the latest of a subject, from a Confluent-compatible registry."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.by_id = {}

    def _get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def schema(self, schema_id):
        if schema_id not in self.by_id:
            text = self._get(f"/schemas/ids/{schema_id}")["schema"]
            self.by_id[schema_id] = fastavro.parse_schema(json.loads(text))
        return self.by_id[schema_id]

    def latest(self, subject):
        v = self._get(f"/subjects/{subject}/versions/latest")
        return v["id"], fastavro.parse_schema(json.loads(v["schema"]))


class Outcome:
    """A record's fate: the key and bytes to write, and why it was refused (if it was)."""

    __slots__ = ("key", "value", "kind", "message")

    def __init__(self, key, value, kind=None, message=None):
        self.key, self.value, self.kind, self.message = key, value, kind, message


class OutcomeBytes(Serializer):
    def __call__(self, value, ctx):
        return value.value


class Check:
    def __init__(self, registry, output):
        self.registry = registry
        self.out_id, self.out_schema = registry.latest(f"{output}-value")
        self.header = b"\x00" + self.out_id.to_bytes(4, "big")

    def decode(self, value):
        if not value:
            return None, ("empty_payload", "no value")
        if len(value) < 5:
            return None, ("truncated_header", "fewer than 5 bytes: no Confluent header")
        if value[0] != 0:
            return None, ("bad_magic_byte", f"magic byte {value[0]}, not 0")
        schema_id = int.from_bytes(value[1:5], "big")
        try:
            schema = self.registry.schema(schema_id)
        except Exception as e:  # the registry's answer, whatever it was
            return None, ("unknown_schema_id", f"schema id {schema_id}: {e}")
        try:
            return fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, schema), None
        except Exception as e:
            return None, ("corrupt_avro", f"not Avro of schema {schema_id}: {e}")

    def __call__(self, value, key, timestamp, headers):
        login, undecodable = self.decode(value)
        if undecodable:
            return Outcome(key, value, *undecodable)
        now_ms = int(time.time() * 1000)
        why = refusal(login, now_ms // 1000)
        if why:
            return Outcome(key, value, "validation", why)
        user_id = uuid(login["user_id"])
        out = {
            "user_id": user_id,
            "app_version": login["app_version"],
            "ip": canonical_ip(login["ip"]),
            "locale": login["locale"],
            "device_id": login["device_id"],
            "timestamp": login["timestamp"],
            "device_type": login["device_type"].strip().lower(),
            "processed_timestamp": now_ms,
        }
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.out_schema, out)
        return Outcome(user_id.encode(), buf.getvalue())


def reason_headers(value, key, timestamp, headers):
    if value.kind is None:
        return []
    return [
        ("sluice.error.kind", value.kind.encode()),
        ("sluice.error.message", value.message.encode()),
    ]


def main():
    p = argparse.ArgumentParser(prog="quix-streams peer")
    p.add_argument("topology", choices=["user-login"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--dlq")
    p.add_argument("--registry", default="http://127.0.0.1:8081")
    p.add_argument("--application-id", default="quix-streams-peer-user-login")
    p.add_argument("--threads", type=int, default=1, help="Quix Streams runs one thread per process")
    p.add_argument("--state-dir", default="state")
    p.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], default="exactly-once")
    p.add_argument("--commit-interval", type=float, default=0.1, help="seconds (Quix's default is 5)")
    a = p.parse_args()
    if a.threads != 1:
        p.error("--threads: Quix Streams processes with one thread; start more processes instead")
    app = Application(
        broker_address=a.bootstrap,
        consumer_group=a.application_id,
        auto_offset_reset="earliest",
        processing_guarantee=a.guarantee,
        commit_interval=a.commit_interval,
        state_dir=a.state_dir,
        loglevel="WARNING",
    )
    source = app.topic(a.input, key_deserializer=BytesDeserializer(), value_deserializer=BytesDeserializer())
    sinks = {
        name: app.topic(name, key_serializer="bytes", value_serializer=OutcomeBytes())
        for name in (a.output, a.dlq or f"{a.input}.dlq")
    }
    output, dlq = sinks[a.output], sinks[a.dlq or f"{a.input}.dlq"]
    check = Check(Registry(a.registry), a.output)
    sdf = app.dataframe(source)
    sdf = sdf.apply(check, metadata=True)
    sdf = sdf.set_headers(reason_headers)
    sdf.to_topic(lambda value, key, ts, headers: dlq if value.kind else output, key=lambda o: o.key)
    app.run()


if __name__ == "__main__":
    sys.exit(main())
