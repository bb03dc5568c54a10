"""Settings: one frozen dataclass, read once from GATEWAY_* environment variables.

Validated at start with messages that name the variable. Durations carry their unit in the
name (`code_ttl_s`). docs/configuration.md lists every variable; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from gateway.ratelimit import DEFAULT_LIMITS, Limit

Env = Literal["sandbox", "production"]


class SettingsError(ValueError):
    """A GATEWAY_* variable is missing or invalid; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")):
        raise SettingsError(f"{name} must be an http(s) URL")
    return raw.rstrip("/")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("GATEWAY_DATABASE_URL")
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise SettingsError("GATEWAY_DATABASE_URL must be a postgresql:// URL")
    return raw


def _regions(raw: str) -> tuple[str, ...]:
    regions = tuple(r.strip().upper() for r in raw.split(",") if r.strip())
    if not regions or not all(len(r) == 2 and r.isalpha() for r in regions):
        raise SettingsError("GATEWAY_ESSC_REGIONS must be two-letter region codes, e.g. CQ,SC")
    return regions


def _proxies(raw: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise SettingsError("GATEWAY_TRUSTED_PROXIES must be a comma-separated list of IP "
                                f"addresses or CIDR networks, got {part!r}") from None
    return tuple(out)

def _crypto_suite(env: Mapping[str, str]) -> Literal["intl", "gm"]:
    raw = (env.get("GATEWAY_CRYPTO_SUITE") or "intl").strip().lower()
    if raw == "intl":
        return "intl"
    if raw == "gm":
        return "gm"
    raise SettingsError(f"GATEWAY_CRYPTO_SUITE must be intl or gm, got {raw!r}")


# ---------------------------------------------------------------- rate limits and shedding
#: GATEWAY_RATELIMIT_<KIND> (docs/rate-limits.md, docs/configuration.md)
RATELIMIT_ENV_PREFIX = "GATEWAY_RATELIMIT_"
ENV_PREFIX = RATELIMIT_ENV_PREFIX

#: DEFAULT_LIMITS plus the general per-resident limit (a resident app refreshes a code every
#: ~20 s and polls a login or consent now and then; 10/s sustained, 20 at once is far above
#: any honest use and far below a scripted abuse).
LIMIT_DEFAULTS: Mapping[str, Limit] = MappingProxyType({
    **DEFAULT_LIMITS,
    "resident": Limit(rate=10, period_s=1, burst=20),
    # RFC 8628 §5.1: user-code entries per resident (20^8 codes; 10 a minute, 5 at once)
    "user_code": Limit(rate=10, period_s=60, burst=5),
})


def parse_limit(name: str, raw: str) -> Limit:
    """`rate/period_s/burst` → Limit, e.g. `50/1/100` (50 per second, 100 at once) or
    `30/60/10` (30 per minute, 10 at once). `name` is the variable, for the message."""
    parts = raw.strip().split("/")
    if len(parts) != 3:
        raise SettingsError(
            f"{name} must be 'rate/period_s/burst' (e.g. '50/1/100'), got {raw!r}")
    try:
        rate, period_s, burst = int(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise SettingsError(
            f"{name}: rate and burst must be integers and period_s a number of seconds, "
            f"got {raw!r}") from None
    try:
        return Limit(rate=rate, period_s=period_s, burst=burst)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class RateLimitConfig:
    enabled: bool = True
    limits: Mapping[str, Limit] = field(default_factory=lambda: dict(LIMIT_DEFAULTS))
    max_inflight: int = 256
    lease: bool = True
    #: in-flight share of the requests outside the gates' paths (None: a quarter)
    max_other: int | None = None


def config_from_env(env: Mapping[str, str]) -> RateLimitConfig:
    """Read GATEWAY_RATELIMIT_<KIND>, GATEWAY_RATELIMIT_ENABLED, GATEWAY_RATELIMIT_LEASE and
    GATEWAY_MAX_INFLIGHT.

    An unknown kind is an error (a typo would otherwise silently keep the default)."""
    e = env
    limits = dict(LIMIT_DEFAULTS)
    flags = {"enabled": True, "lease": True}
    for name, raw in e.items():
        if not name.startswith(ENV_PREFIX) or raw == "":
            continue
        kind = name[len(ENV_PREFIX):].lower()
        if kind in ("enabled", "lease"):
            if raw.lower() in ("1", "true", "yes", "on"):
                flags[kind] = True
            elif raw.lower() in ("0", "false", "no", "off"):
                flags[kind] = False
            else:
                raise SettingsError(f"{name} must be true or false, got {raw!r}")
            continue
        if kind not in LIMIT_DEFAULTS:
            known = ", ".join(ENV_PREFIX + k.upper() for k in LIMIT_DEFAULTS)
            raise SettingsError(f"{name} names no rate-limit kind; known: {known}")
        limits[kind] = parse_limit(name, raw)
    raw_inflight = e.get("GATEWAY_MAX_INFLIGHT", "")
    max_inflight = 256
    if raw_inflight != "":
        try:
            max_inflight = int(raw_inflight)
        except ValueError:
            raise SettingsError(
                f"GATEWAY_MAX_INFLIGHT must be an integer, got {raw_inflight!r}") from None
        if not 0 <= max_inflight <= 1_000_000:
            raise SettingsError("GATEWAY_MAX_INFLIGHT must be between 0 (off) and 1000000")
    max_other: int | None = None
    raw_other = e.get("GATEWAY_MAX_INFLIGHT_OTHER", "")
    if raw_other != "":
        try:
            max_other = int(raw_other)
        except ValueError:
            raise SettingsError(
                f"GATEWAY_MAX_INFLIGHT_OTHER must be an integer, got {raw_other!r}") from None
        if not 1 <= max_other <= max(1, max_inflight) and max_inflight:
            raise SettingsError("GATEWAY_MAX_INFLIGHT_OTHER must be between 1 and "
                                "GATEWAY_MAX_INFLIGHT")
    return RateLimitConfig(enabled=flags["enabled"], limits=limits, max_inflight=max_inflight,
                           lease=flags["lease"], max_other=max_other)


@dataclass(frozen=True)
class Settings:
    env: Env = "sandbox"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    redis_url: str | None = None
    redis_prefix: str = "gw:"
    issuer: str = "http://127.0.0.1:8080"
    keys_dir: Path = Path("keys")
    admin_token: str | None = field(default=None, repr=False)
    log_format: Literal["json", "console"] = "console"
    log_level: str = "info"
    max_body_bytes: int = 16 * 1024
    shutdown_timeout_s: int = 10
    # codes (申码/制码/亮码/验码)
    code_ttl_s: int = 30
    code_max_skew_s: int = 5
    code_refresh_in_s: int = 20
    # OAuth
    access_token_ttl_s: int = 600
    gate_token_ttl_s: int = 3600
    client_assertion_max_ttl_s: int = 300
    #: Number matching on scan-to-login: when true (the default), approving needs the number
    #: the browser shows and the scan answer lists the choices; when false, no choices are
    #: offered and the approval needs no body (a number the app sends must still match).
    login_require_number: bool = True
    #: RFC 8628 §3.2: a device authorization's life (expires_in) and the kiosk's minimum
    #: polling interval (slow_down adds 5 s to it when the kiosk polls faster).
    device_code_ttl_s: int = 600
    device_poll_interval_s: int = 5
    # sandbox
    demo_data: Path | None = None
    upstream_timeout_s: float = 2.0
    redis_cluster: bool = False
    data_key_b64: str | None = field(default=None, repr=False)
    # upstream platforms (production; the sandbox serves its own under /sandbox/upstreams/)
    essc_regions: tuple[str, ...] = ("CQ", "SC")
    ykb_url: str | None = None
    ykb_issuer: str | None = None
    essc_url: str | None = None
    essc_issuer_prefix: str | None = None
    #: an e-SSC code under an unknown key id fetches its region's keys at most this often
    essc_keys_refresh_min_s: float = 10.0
    #: how long a gate's verify waits for such a fetch before answering 503 unavailable
    essc_keys_wait_s: float = 0.5
    certlib_url: str | None = None
    psam_gate_keys_file: Path | None = None
    consent_policy_file: Path | None = None
    #: The scene catalogue (docs/scenes.md); None = the built-in gateway/data/scenes.json.
    scenes_file: Path | None = None
    # --- operator's view (issue 15; docs/operators.md) ---
    #: How often every worker polls the scene catalogue's and venue registry's versions.
    ops_poll_ms: int = 500
    #: Bearer token /metrics asks for; None = open (sandbox). Production needs it.
    metrics_token: str | None = field(default=None, repr=False)
    #: Where workers leave their metric snapshots for the whole-server scrape (docs/metrics.md);
    #: None = `gateway serve` makes a private directory per run.
    metrics_dir: Path | None = None
    #: How often each worker writes its snapshot (a scrape sums the others' last snapshots).
    metrics_flush_ms: int = 500
    # --- end operator's view ---
    # offline gates: the signed trust list and card deny-list (docs/offline.md)
    #: After issued_at + this, an offline gate refuses to verify with the trust list.
    trust_list_max_age_s: int = 86_400
    #: After issued_at + this, an offline gate refuses card taps on the deny-list it holds.
    deny_list_max_age_s: int = 86_400
    #: PBKDF2 iterations of the deny-list's card hash (a gate computes one per tap).
    card_hash_iterations: int = 10_000
    #: Deny-list changes kept for `?since=` deltas; an older `since` gets the full list.
    deny_list_delta_events: int = 10_000
    # faults and overload (issue 12; docs/operations.md)
    #: connect and reply timeout of every Redis command (the gate path's pipe included)
    redis_timeout_s: float = 0.15
    #: a request's header block must arrive within this after its first byte / the connection
    header_timeout_s: float = 5.0
    #: a request's body must arrive within this after its headers
    body_timeout_s: float = 5.0
    #: an idle keep-alive connection is closed after this
    keepalive_timeout_s: float = 30.0
    #: open connections per client address (0 = unlimited); trusted proxies are not capped
    max_connections_per_ip: int = 256
    #: proxies whose X-Forwarded-For names the client (CIDRs)
    trusted_proxies: tuple[str, ...] = ()
    #: /readyz answers within this, whatever the stores do
    readyz_timeout_s: float = 0.5
    #: Where the signed audit checkpoints go (docs/audit.md); None = not exported by the server.
    audit_checkpoint_file: Path | None = None
    audit_checkpoint_interval_s: int = 300
    # device-bound codes (docs/devices.md)
    device_cert_ttl_s: int = 86400
    devices_max: int = 3
    # offline gates and transaction records (docs/records.md)
    #: How old a scan's `scanned_at` may be when it reaches the gateway (buffered by a gate
    #: during a network drop, or uploaded); older is `expired`. Claims live this much longer.
    offline_max_s: int = 900
    database_url: str | None = field(default=None, repr=False)
    transactions_enabled: bool = True
    transactions_retention_days: int = 400
    transactions_outbox_max: int = 2_000_000
    transactions_outbox_shards: int = 4
    transactions_export_batch: int = 20_000
    #: the exporter, caught up, lets the next batch fill this long (docs/records.md)
    transactions_export_linger_s: float = 1.0
    #: `gateway serve --workers N` with PostgreSQL runs the exporter in a process of its own,
    #: at this lower CPU priority (nice), instead of inside the verifying workers
    transactions_exporter_process: bool = True
    transactions_exporter_nice: int = 10
    #: whether THIS process drains the outbox: set by `gateway serve` (False in its workers
    #: when the exporter has its own process), never read from the environment
    exporter_here: bool = True
    #: False in the exporter process `gateway serve` runs beside its workers (it answers no
    #: HTTP, so it writes no request-counter snapshot; its records counters it does write)
    serves_http: bool = True
    #: live counters (today, last minutes) in the record's own script (docs/stats.md)
    stats_live: bool = True
    #: per-caller limits, leases, in-flight caps (GATEWAY_RATELIMIT_*, GATEWAY_MAX_INFLIGHT*)
    rate_limits: RateLimitConfig = field(default_factory=lambda: RateLimitConfig())
    #: GATEWAY_CRYPTO_SUITE (issue 17): `intl` = EdDSA/ES256, HMAC-SHA256, AES-GCM; `gm` = SM2
    #: (with SM3) for new signing keys, HMAC-SM3 and SM4-GCM for new personal data at rest.
    #: Data of the other suite stays readable and findable (docs/crypto-suites.md).
    crypto_suite: Literal["intl", "gm"] = "intl"

    @property
    def is_sandbox(self) -> bool:
        return self.env == "sandbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        mode = e.get("GATEWAY_ENV", "sandbox") or "sandbox"
        if mode not in ("sandbox", "production"):
            raise SettingsError(f"GATEWAY_ENV must be 'sandbox' or 'production', got {mode!r}")
        host = e.get("GATEWAY_HOST", "127.0.0.1") or "127.0.0.1"
        port = _int(e, "GATEWAY_PORT", 8080, 0, 65535)
        redis_url = e.get("GATEWAY_REDIS_URL") or None
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("GATEWAY_REDIS_URL must start with redis://, rediss:// or unix://")
        wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - detecting, not binding
        default_issuer = f"http://{'127.0.0.1' if wildcard else host}:{port}"
        issuer = (e.get("GATEWAY_ISSUER") or default_issuer).rstrip("/")
        if not issuer.startswith(("https://", "http://")):
            raise SettingsError("GATEWAY_ISSUER must be an http(s) URL")
        log_format = e.get("GATEWAY_LOG_FORMAT") or ("console" if mode == "sandbox" else "json")
        if log_format not in ("json", "console"):
            raise SettingsError("GATEWAY_LOG_FORMAT must be 'json' or 'console'")
        code_ttl_s = _int(e, "GATEWAY_CODE_TTL_S", 30, 5, 60)
        s = cls(
            env=mode,  # type: ignore[arg-type]
            host=host,
            port=port,
            workers=_int(e, "GATEWAY_WORKERS", 1, 1, 64),
            redis_url=redis_url,
            redis_prefix=e.get("GATEWAY_REDIS_PREFIX", "gw:") or "gw:",
            issuer=issuer,
            keys_dir=Path(e.get("GATEWAY_KEYS_DIR") or "keys"),
            admin_token=e.get("GATEWAY_ADMIN_TOKEN") or None,
            log_format=log_format,  # type: ignore[arg-type]
            log_level=(e.get("GATEWAY_LOG_LEVEL") or "info").lower(),
            max_body_bytes=_int(e, "GATEWAY_MAX_BODY_BYTES", 16 * 1024, 1024, 1024 * 1024),
            shutdown_timeout_s=_int(e, "GATEWAY_SHUTDOWN_TIMEOUT_S", 10, 0, 300),
            code_ttl_s=code_ttl_s,
            code_max_skew_s=_int(e, "GATEWAY_CODE_MAX_SKEW_S", 5, 0, 30),
            code_refresh_in_s=_int(e, "GATEWAY_CODE_REFRESH_IN_S", max(1, code_ttl_s * 2 // 3),
                                   1, code_ttl_s),
            access_token_ttl_s=_int(e, "GATEWAY_ACCESS_TOKEN_TTL_S", 600, 60, 3600),
            gate_token_ttl_s=_int(e, "GATEWAY_GATE_TOKEN_TTL_S", 3600, 60, 86400),
            client_assertion_max_ttl_s=_int(e, "GATEWAY_CLIENT_ASSERTION_MAX_TTL_S", 300, 30, 3600),
            login_require_number=_bool(e, "GATEWAY_LOGIN_REQUIRE_NUMBER", True),
            device_code_ttl_s=_int(e, "GATEWAY_DEVICE_CODE_TTL_S", 600, 60, 1800),
            device_poll_interval_s=_int(e, "GATEWAY_DEVICE_POLL_INTERVAL_S", 5, 1, 60),
            demo_data=Path(e["GATEWAY_DEMO_DATA"]) if e.get("GATEWAY_DEMO_DATA") else None,
            upstream_timeout_s=_int(e, "GATEWAY_UPSTREAM_TIMEOUT_MS", 2000, 50, 60000) / 1000,
            redis_cluster=_bool(e, "GATEWAY_REDIS_CLUSTER", False),
            data_key_b64=e.get("GATEWAY_DATA_KEY") or None,
            essc_regions=_regions(e.get("GATEWAY_ESSC_REGIONS") or "CQ,SC"),
            ykb_url=_url(e, "GATEWAY_YKB_URL"),
            ykb_issuer=e.get("GATEWAY_YKB_ISSUER") or None,
            essc_url=_url(e, "GATEWAY_ESSC_URL"),
            essc_issuer_prefix=e.get("GATEWAY_ESSC_ISSUER_PREFIX") or None,
            essc_keys_refresh_min_s=_int(e, "GATEWAY_ESSC_KEYS_REFRESH_MIN_S", 10, 1, 3600),
            essc_keys_wait_s=_int(e, "GATEWAY_ESSC_KEYS_WAIT_MS", 500, 0, 5000) / 1000,
            certlib_url=_url(e, "GATEWAY_CERTLIB_URL"),
            psam_gate_keys_file=_path(e, "GATEWAY_PSAM_GATE_KEYS"),
            consent_policy_file=_path(e, "GATEWAY_CONSENT_POLICY"),
            scenes_file=_path(e, "GATEWAY_SCENES_FILE"),
            ops_poll_ms=_int(e, "GATEWAY_OPS_POLL_MS", 500, 50, 1500),
            metrics_token=e.get("GATEWAY_METRICS_TOKEN") or None,
            metrics_dir=_path(e, "GATEWAY_METRICS_DIR"),
            metrics_flush_ms=_int(e, "GATEWAY_METRICS_FLUSH_MS", 500, 50, 10000),
            trust_list_max_age_s=_int(e, "GATEWAY_TRUST_LIST_MAX_AGE_S", 86_400, 3600,
                                      30 * 86_400),
            deny_list_max_age_s=_int(e, "GATEWAY_DENY_LIST_MAX_AGE_S", 86_400, 600, 30 * 86_400),
            card_hash_iterations=_int(e, "GATEWAY_CARD_HASH_ITERATIONS", 10_000, 1000, 1_000_000),
            deny_list_delta_events=_int(e, "GATEWAY_DENY_LIST_DELTA_EVENTS", 10_000, 100,
                                        1_000_000),
            redis_timeout_s=_int(e, "GATEWAY_REDIS_TIMEOUT_MS", 150, 10, 60000) / 1000,
            header_timeout_s=_int(e, "GATEWAY_HEADER_TIMEOUT_MS", 5000, 100, 300000) / 1000,
            body_timeout_s=_int(e, "GATEWAY_BODY_TIMEOUT_MS", 5000, 100, 300000) / 1000,
            keepalive_timeout_s=_int(e, "GATEWAY_KEEPALIVE_TIMEOUT_S", 30, 1, 3600),
            max_connections_per_ip=_int(e, "GATEWAY_MAX_CONNECTIONS_PER_IP", 256, 0, 1_000_000),
            trusted_proxies=_proxies(e.get("GATEWAY_TRUSTED_PROXIES") or ""),
            readyz_timeout_s=_int(e, "GATEWAY_READYZ_TIMEOUT_MS", 500, 10, 60000) / 1000,
            audit_checkpoint_file=_path(e, "GATEWAY_AUDIT_CHECKPOINT_FILE"),
            audit_checkpoint_interval_s=_int(e, "GATEWAY_AUDIT_CHECKPOINT_INTERVAL_S", 300, 1,
                                             86400),
            device_cert_ttl_s=_int(e, "GATEWAY_DEVICE_CERT_TTL_S", 86400, 300, 86400),
            devices_max=_int(e, "GATEWAY_DEVICES_MAX", 3, 1, 10),
            offline_max_s=_int(e, "GATEWAY_OFFLINE_MAX_S", 900, 0, 86400),
            database_url=_database_url(e),
            transactions_enabled=_bool(e, "GATEWAY_TRANSACTIONS_ENABLED", True),
            stats_live=_bool(e, "GATEWAY_STATS_LIVE", True),
            transactions_retention_days=_int(e, "GATEWAY_TRANSACTIONS_RETENTION_DAYS", 400,
                                             1, 36600),
            transactions_outbox_max=_int(e, "GATEWAY_TRANSACTIONS_OUTBOX_MAX", 2_000_000,
                                         1000, 100_000_000),
            transactions_outbox_shards=_int(e, "GATEWAY_TRANSACTIONS_OUTBOX_SHARDS", 4, 1, 64),
            transactions_export_batch=_int(e, "GATEWAY_TRANSACTIONS_EXPORT_BATCH", 20_000,
                                           100, 50_000),
            transactions_export_linger_s=_int(e, "GATEWAY_TRANSACTIONS_EXPORT_LINGER_MS", 1000,
                                              0, 60_000) / 1000,
            transactions_exporter_process=_bool(e, "GATEWAY_TRANSACTIONS_EXPORTER_PROCESS",
                                                True),
            transactions_exporter_nice=_int(e, "GATEWAY_TRANSACTIONS_EXPORTER_NICE", 10, 0, 19),
            rate_limits=config_from_env(e),
            crypto_suite=_crypto_suite(e),
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError("GATEWAY_LOG_LEVEL must be debug, info, warning or error")
        if self.env == "production":
            if not self.redis_url:
                raise SettingsError(
                    "GATEWAY_ENV=production needs GATEWAY_REDIS_URL: single use of codes and "
                    "tokens must hold across workers and restarts")
            if not self.metrics_token or len(self.metrics_token) < 32:
                raise SettingsError("GATEWAY_ENV=production needs GATEWAY_METRICS_TOKEN "
                                    "(at least 32 characters): /metrics is not public")
            if not self.issuer.startswith("https://"):
                raise SettingsError("GATEWAY_ENV=production needs an https:// GATEWAY_ISSUER")
            for name, value in (("GATEWAY_YKB_URL", self.ykb_url),
                                ("GATEWAY_ESSC_URL", self.essc_url),
                                ("GATEWAY_CERTLIB_URL", self.certlib_url),
                                ("GATEWAY_PSAM_GATE_KEYS", self.psam_gate_keys_file)):
                if not value:
                    raise SettingsError(f"GATEWAY_ENV=production needs {name}")
            for name, url in (("GATEWAY_YKB_URL", self.ykb_url),
                              ("GATEWAY_ESSC_URL", self.essc_url),
                              ("GATEWAY_CERTLIB_URL", self.certlib_url)):
                # these serve the key sets that verify upstream assertions and e-SSC codes,
                # and the certificates themselves: never over plain http in production
                if url is not None and not url.startswith("https://"):
                    raise SettingsError(f"{name} must be an https:// URL in production")
            if not self.transactions_enabled:
                raise SettingsError("GATEWAY_ENV=production refuses "
                                    "GATEWAY_TRANSACTIONS_ENABLED=false: every scan is recorded")
            if not self.database_url:
                raise SettingsError(
                    "GATEWAY_ENV=production needs GATEWAY_DATABASE_URL: the transaction "
                    "records (fare clearing) live in PostgreSQL")
