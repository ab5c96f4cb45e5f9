"""Every Redis key meterstream reads or writes, and every TTL, in one place.

Public keys (SPEC §5, a CONTRACT for dashboards) and internal keys (this module's docstrings are what
docs/redis-keys.md documents). All keys start with the configured prefix (``METERSTREAM_REDIS_PREFIX``,
default ``ms``). Keys that take part in one atomic step share a Redis Cluster hash tag:

- ``{<meter_id>:<customer_id>}`` — a customer's aggregates and everything the apply step touches;
- ``{<meter_id>|<shard>}``       — identifier claims (dedup + cancellation routing) of one shard of identifiers;
- ``{<meter_id>}``               — the customers index of a meter;
- ``{<group>}``                  — a consumer group's stored progress.

Identifiers are hashed (:func:`identifier_digest`, :func:`claim_digest`) so a 100-character identifier costs
16 bytes of key, or 8 bytes of hash field in a claim bucket.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from processor.limits import DEDUP_WINDOW_S, USAGE_RETENTION_DAYS

__all__ = [
    "BEST_TTL_S",
    "CANDIDATES_TTL_S",
    "CLAIM_SHARDS",
    "CLAIM_TTL_S",
    "DAY_S",
    "DEDUP_WINDOW_MS",
    "DELIVERY_TTL_S",
    "GATEWAY_SESSION_TTL_S",
    "HOUR_S",
    "MINUTES_TTL_S",
    "OPS_RECORD_TTL_S",
    "USAGE_RETENTION_DAYS",
    "WATERMARK_TTL_S",
    "Keys",
    "claim_digest",
    "identifier_digest",
]

HOUR_S = 3600
DAY_S = 86_400
#: Stripe holds an identifier for 24 h after the event holding it was received, and an adjustment can
#: cancel an event received at most 24 h earlier (or later, for a cancellation that came first).
DEDUP_WINDOW_MS = DEDUP_WINDOW_S * 1000  # Stripe's 24 h identifier window (processor/limits.py)
#: A claim only matters for 24 h of *received* time; one hour of slack, plus the processing lag which the
#: processor adds at write time (a processor catching up after an outage writes claims for old records).
CLAIM_TTL_S = 25 * HOUR_S
#: Claims of one (meter, received day) are spread over this many hashes by identifier digest, so each stays a
#: compact listpack (Valkey's ``hash-max-listpack-entries``, 512 by default) up to ~2 million identifiers per
#: meter and day; beyond that a bucket becomes a hashtable (about twice the bytes per identifier) unless the
#: server's limit is raised. Fixed: every processor must find an identifier in the same bucket.
CLAIM_SHARDS = 4096
#: Candidates of a pre-aggregated window / raw `last` bucket are only needed while one of them can still be
#: cancelled (24 h after the latest was received); the current best is kept separately (BEST_TTL_S).
CANDIDATES_TTL_S = 25 * HOUR_S
#: The best (surviving) event of a window must outlive every event that could still land in the window:
#: timestamps may be up to 35 days before received time, plus a day-long window, plus slack.
BEST_TTL_S = 37 * DAY_S
#: Hour, day and minute buckets are kept USAGE_RETENTION_DAYS (processor/limits.py) from their start by
#: default (``METERSTREAM_USAGE_RETENTION_DAYS``). A minute hash (one UTC day) expires that long after the end
#: of its day; hour and day hashes lose older fields once a day (per processor) and expire whole when their
#: newest bucket is that old.
#: The expiry rebuild's swap gives a minute hash it copied (processor/ops/swap.py): the default retention
#: from now, which outlasts the exact one (the end of the hash's day plus retention) the processor sets.
MINUTES_TTL_S = USAGE_RETENTION_DAYS * DAY_S
#: Per (meter, customer) applied-offset watermarks guard against re-applying a record after a crash; they
#: are only consulted for records newer than the stored progress, so 40 days (topic retention) is ample.
WATERMARK_TTL_S = 40 * DAY_S
#: A v2 meter-event session token the gateway issued is valid for 15 minutes, as Stripe's are.
GATEWAY_SESSION_TTL_S = 15 * 60
#: The sink's delivery record of one (meter, UTC day of received time): as long as the accepted topic keeps
#: the records it describes (40 days), so `meterstream replay` can tell "never sent" from "sent".
DELIVERY_TTL_S = 40 * DAY_S
#: Records of operations (errors replayed, corrections, imports): longer than any event they describe can
#: still count (35 days of timestamp window plus slack), after which repeating the operation is harmless.
OPS_RECORD_TTL_S = 40 * DAY_S


def identifier_digest(identifier: str) -> str:
    """A 16-character URL-safe digest of an identifier (96 bits: collisions are not a practical concern)."""
    raw = hashlib.blake2b(identifier.encode("utf-8"), digest_size=12).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def claim_digest(identifier: str) -> tuple[int, bytes]:
    """(shard, 8-byte field) of an identifier's claim: 76 bits of blake2b in all, so two identifiers of one
    meter received within a day collide with odds below 1e-5 at a billion identifiers per meter and day."""
    raw = hashlib.blake2b(identifier.encode("utf-8"), digest_size=10).digest()
    return int.from_bytes(raw[8:], "big") % CLAIM_SHARDS, raw[:8]


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix. ``Keys("ms").usage_hour("mtr_1", "cus_1")`` → ``ms:usage:{mtr_1:cus_1}:hour``."""

    prefix: str = "ms"

    # ---- public (SPEC §5) -------------------------------------------------------------------------
    @property
    def meters(self) -> str:
        """HASH meter id → meter JSON (mirror of the compacted ``meters`` topic)."""
        return f"{self.prefix}:meters"

    def usage_hour(self, meter_id: str, customer: str) -> str:
        """HASH UTC hour start (unix s) → aggregated value (integer string)."""
        return f"{self.prefix}:usage:{{{meter_id}:{customer}}}:hour"

    def usage_day(self, meter_id: str, customer: str) -> str:
        """HASH UTC day start (unix s) → aggregated value (integer string)."""
        return f"{self.prefix}:usage:{{{meter_id}:{customer}}}:day"

    def customers(self, meter_id: str) -> str:
        """ZSET customer id → latest event timestamp seen (score)."""
        return f"{self.prefix}:customers:{{{meter_id}}}"

    # ---- internal ---------------------------------------------------------------------------------
    @property
    def meter_names(self) -> str:
        """HASH event_name → meter id: the reverse index of the registry (one event_name, one meter)."""
        return f"{self.prefix}:meter-names"

    @property
    def meters_lock(self) -> str:
        """STRING lock token: serialises registry writes so the mirror applies records in topic order.
        Set with NX and a PX expiry (processor/meters/registry.py LOCK_TTL_MS); released by its owner."""
        return f"{self.prefix}:meters-lock"

    def claims(self, meter_id: str, shard: int, day: int) -> str:
        """HASH 8-byte identifier digest → the identifier's packed entries received on UTC day ``day`` (days
        since 1970, of the received time): accepted events and waiting cancellations, each as received ms
        within the day + record position (13 bytes; claim.lua documents the layout). Expires as a whole
        CLAIM_TTL_S after the end of its day (longer by the processing lag when catching up)."""
        return f"{self.prefix}:idb:{{{meter_id}|{shard:x}}}:{day}"

    def watermark(self, meter_id: str, customer: str) -> str:
        """HASH source ("<topic>/<partition>") → highest offset applied to this customer. TTL WATERMARK_TTL_S."""
        return f"{self.prefix}:wm:{{{meter_id}:{customer}}}"

    def minutes(self, meter_id: str, customer: str, day: int) -> str:
        """HASH UTC minute start → aggregated value of that minute, for the UTC day ``day``. For raw ``last``
        meters the value is "rank|value" (the rank orders events within the minute). Expires USAGE_RETENTION_DAYS after the end of ``day``."""
        return f"{self.prefix}:min:{{{meter_id}:{customer}}}:{day}"

    def candidates(self, meter_id: str, customer: str, unit: int) -> str:
        """HASH event record position → "rank|value|ts": the cancellable events of a pre-aggregated window or of a
        raw `last` hour. TTL CANDIDATES_TTL_S after the last write."""
        return f"{self.prefix}:cand:{{{meter_id}:{customer}}}:{unit}"

    def best(self, meter_id: str, customer: str, unit: int) -> str:
        """STRING "rank|value|ts|identifier": the surviving event of that window / hour. TTL BEST_TTL_S."""
        return f"{self.prefix}:best:{{{meter_id}:{customer}}}:{unit}"

    def progress(self, group: str) -> str:
        """HASH "<topic>/<partition>" → next offset to read, stored after each batch is applied."""
        return f"{self.prefix}:progress:{{{group}}}"

    def stats(self, component: str) -> str:
        """HASH counter name → value, for the dashboard's pipeline-health panel."""
        return f"{self.prefix}:stats:{component}"

    def gateway_session(self, token_digest: str) -> str:
        """STRING "<expiry (unix s)>|<key fingerprint>": a v2 meter-event session the gateway issued, keyed by a
        digest of its token (the token itself is never stored); the fingerprint binds it to the API key that
        created it. Valid GATEWAY_SESSION_TTL_S; the key lives twice that,
        so a late token is answered "expired" rather than "invalid"."""
        return f"{self.prefix}:gw-session:{token_digest}"

    @property
    def sink_stripe_meters(self) -> str:
        """HASH local meter id → JSON ``{"stripe_id", "api_base"}``: the Stripe meter the sink found or
        created for it. A hint only (verified once per sink process), so it needs no TTL: one field per meter."""
        return f"{self.prefix}:sink:stripe-meters"

    def delivery(self, meter_id: str, day: int) -> str:
        """HASH ("e"|"c") + identifier digest → "a<ms>" (first send attempt) or "d<ms>" (Stripe accepted it):
        the sink's delivery record of a meter's accepted records received on UTC day ``day``. TTL
        DELIVERY_TTL_S after the last write (processor/sink/delivery.py)."""
        return f"{self.prefix}:dlv:{{{meter_id}:{day}}}"

    @property
    def delivery_since(self) -> str:
        """STRING unix ms: when the delivery record started (an absent entry proves "never sent" only for
        records received after it). No TTL: one key."""
        return f"{self.prefix}:dlv-since"

    def ops_record(self, kind: str, day: int) -> str:
        """HASH item → "p<ms>" (started) or "d<ms>" (done): what an ops command already did (``kind`` =
        errors-replayed / corrections), per UTC day of the item. TTL OPS_RECORD_TTL_S."""
        return f"{self.prefix}:ops:{kind}:{day}"

    def import_state(self, file_digest: str) -> str:
        """STRING JSON: progress of ``meterstream import`` of one file (by content digest). TTL OPS_RECORD_TTL_S."""
        return f"{self.prefix}:import:{file_digest}"

    def s3_object(self, bucket: str, object_key: str) -> str:
        """STRING JSON: the S3 connector's record of one object (ETag imported, the timestamp pinned for its
        rows without one, the outcome report). The object key is hashed (S3 keys run to 1,024 bytes). TTL
        OPS_RECORD_TTL_S, renewed whenever a listing still shows the object, so it outlives the object."""
        return f"{self.prefix}:s3:{bucket}:{identifier_digest(object_key)}"

    def rebuild_prefix(self, run_id: str) -> str:
        """The shadow prefix of one ``meterstream rebuild`` run: its keys keep the live keys' hash tags
        (``{meter:customer}``), so a swap is one atomic script per pair. Deleted when the run ends."""
        return f"{self.prefix}-rebuild-{run_id}"

    def claim_pattern(self) -> str:
        """SCAN MATCH pattern over identifier claims (ops tools only; never KEYS)."""
        return f"{self.prefix}:idb:*"

    def usage_pattern(self, meter_id: str) -> str:
        """SCAN MATCH pattern over a meter's usage keys (ops tools only; never KEYS)."""
        return f"{self.prefix}:usage:{{{meter_id}:*"

    def all_pattern(self) -> str:
        """SCAN MATCH pattern for every key under this prefix (rebuild/cleanup)."""
        return f"{self.prefix}:*"

    def dashboard_history(self) -> str:
        """HASH sample time (unix seconds, a multiple of the sampling interval) → JSON of the pipeline's
        counters and offsets then; written by the gateways (HSETNX: one sample per interval whichever
        gateway takes it), trimmed to the last ~70 minutes, read by the dashboard's history charts."""
        return f"{self.prefix}:dash:history"


# ---- issue 14: idempotency keys and error-report notifications (kept at the end to ease merging) -------
#: Stripe keeps an Idempotency-Key's answer at least 24 h (docs.stripe.com/idempotency).
IDEMPOTENCY_TTL_S = DAY_S
#: A request still running under a key holds it this long at most (a gateway that died mid-request frees
#: it after this): longer than the gateway waits for Kafka (ingest.ACK_TIMEOUT_S, 35 s).
IDEMPOTENCY_LOCK_MS = 60_000
#: Stripe serves a v2 event for 30 days (``GET /v2/core/events/{id}``).
NOTIFY_EVENT_TTL_S = 30 * DAY_S


def idempotency_key(prefix: str, key: str) -> str:
    """STRING: the state of one ``Idempotency-Key`` of the account: ``p<fingerprint>:<owner>`` while its
    first request runs (PX IDEMPOTENCY_LOCK_MS), then ``d<fingerprint>|<status>|<body>`` (EX
    IDEMPOTENCY_TTL_S). The key is hashed (up to 255 characters of client text)."""
    return f"{prefix}:idem:{identifier_digest(key)}"


# The notifier's keys share the hash tag {notify} so one script stores an event and its deliveries at once.
def notify_destinations(prefix: str) -> str:
    """HASH destination id → JSON of a ``v2.core.event_destination`` (with its signing secret). No TTL."""
    return f"{prefix}:{{notify}}:destinations"


def notify_event(prefix: str, event_id: str) -> str:
    """STRING JSON: a full ``v2.core.event`` (``GET /v2/core/events/{id}``). TTL NOTIFY_EVENT_TTL_S."""
    return f"{prefix}:{{notify}}:event:{event_id}"


def notify_deliveries(prefix: str) -> str:
    """ZSET ``<event id>|<destination id>`` → next attempt (unix ms): deliveries the endpoint has not
    acknowledged yet. Removed on a 2xx answer, or when the event is older than 3 days (Stripe's retry span)."""
    return f"{prefix}:{{notify}}:deliveries"


def notify_attempts(prefix: str) -> str:
    """HASH ``<event id>|<destination id>`` → attempts made so far (the backoff). Removed with the delivery."""
    return f"{prefix}:{{notify}}:attempts"
