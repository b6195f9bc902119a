"""Settings from environment variables (prefix ACCORD_), with safe demo defaults."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The well-known secret the demo runs with. `accord serve` refuses it in production.
DEMO_SECRET_KEY = "accord-demo-secret-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore")

    mode: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./accord.db"
    secret_key: str = Field(default=DEMO_SECRET_KEY, min_length=16)
    host: str = "127.0.0.1"
    port: int = 8000
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    invitation_days: int = 7
    user_session_days: int = 30
    # Sign-in throttling (accord.users.throttle), as Auth0's brute-force protection: failed logins for
    # one account from one address, and from one address over all accounts, within the window.
    login_failure_window_seconds: int = Field(default=900, ge=1)
    login_failures_per_account: int = Field(default=10, ge=1)
    login_failures_per_address: int = Field(default=100, ge=1)
    log_sql: bool = False
    # The gateway (data plane).
    gateway_redis_url: str | None = None  # shared limit counters for several gateway processes
    gateway_limits_on_redis_down: Literal["open", "closed"] = "open"  # per-process limits, or 503
    gateway_upstream_timeout: float = 30.0
    gateway_poll_interval: float = 0.2  # how often the program version is checked
    gateway_flush_interval: float = 1.0  # how often usage is written
    # The gateway's own HTTP server, in whole seconds: an idle keep-alive connection is closed after
    # `keepalive`; a client gets `header` to send a request head (slowloris) and may stall a request
    # body, or stop reading its answer, for `stall` before it is answered 408 or disconnected.
    gateway_keepalive_timeout: int = Field(default=5, ge=1)
    gateway_header_timeout: int = Field(default=10, ge=1)
    gateway_stall_timeout: int = Field(default=30, ge=1)
    # How large a request head the gateway's server reads (nginx: large_client_header_buffers): a longer
    # request target is answered 414, more header bytes in all or more header fields 431.
    gateway_max_url_bytes: int = Field(default=8 * 1024, ge=256)
    gateway_max_head_bytes: int = Field(default=32 * 1024, ge=1024)
    gateway_max_headers: int = Field(default=100, ge=8)
    # Webhooks (accord.webhooks): the dispatcher runs in `accord worker`, `accord serve` and `accord demo`.
    webhooks_allow_http: bool = False  # endpoints may be http:// URLs (tests, local receivers), not only https://
    webhooks_allow_private: bool = False  # deliveries may go to loopback, private and link-local addresses
    webhooks_timeout: float = 10.0  # seconds for a whole attempt: connect, send, and read the answer
    webhooks_connect_timeout: float = 5.0
    webhooks_poll_interval: float = 0.2  # how often an idle dispatcher looks for new events and due retries
    webhooks_concurrency: int = Field(default=100, ge=1, le=10_000)  # attempts in flight per worker
    webhooks_retry_hours: float = 72.0  # retry a failing delivery this long, then fail it and disable the endpoint
    # A claimed delivery is leased for `webhooks_timeout` + this margin (time to record the result); a
    # killed worker's deliveries are taken over by another worker once their lease has run out.
    webhooks_lease_margin: float = 30.0
    # Email notifications (accord.notifications). No smtp_host: embedded mode, where mail is not
    # sent over the network but written to the log (the demo's way of showing it).
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None  # SecretStr: never shown by repr() or logs
    smtp_starttls: bool = True  # upgrade the connection with STARTTLS before logging in
    smtp_timeout: float = 30.0
    mail_from: str = "Accord <accord@localhost>"
    public_url: str | None = None  # the control plane's address in emails; default http://host:port
    program_name: str = "Accord"  # how emails name the partner program
    staff_email: str | None = None  # the program team's address for provider-side notices (else owners/admins)
    email_verification_hours: int = 48
    password_reset_minutes: int = 60
    notification_poll_interval: float = 0.5
    email_max_attempts: int = 10  # then the message is marked failed
    email_retry_base_seconds: float = 180.0  # doubles each attempt: 3 min, 6, 12 … about 18 h over 10 attempts
    email_retry_max_seconds: float = 6 * 3600.0
    # Events, webhook deliveries (with their attempts) and emails are deleted this long after they are
    # done with (accord.events.retention); audit entries and usage counts are kept.
    retention_days: int = Field(default=30, ge=1)
    # Onboarding (accord.onboarding): when a live partner counts as active, inactive, churned.
    onboarding_active_after_days: int = Field(default=7, ge=1)  # production calls this long after the first
    inactive_after_days: int = Field(default=30, ge=1)  # no admitted call for this long after being live
    churned_after_days: int = Field(default=90, ge=1)  # inactive for this long
    access_request_sla_hours: float = Field(default=48.0, gt=0)  # production access requests are decided within
    onboarding_poll_interval: float = 1.0  # how often the sweeper looks for changed facts
    onboarding_full_pass_seconds: float = 60.0  # how often it checks time-based states for every partner
    # The integration audit (accord.integrations): when a credential counts as stale (revoke recommended)
    # and when access with no admitted call is flagged.
    stale_credential_days: int = Field(default=90, ge=1)
    no_traffic_days: int = Field(default=30, ge=1)

    def refuse_unsafe(self) -> None:
        """Raise if this configuration must not run in production."""
        if self.mode == "production" and self.secret_key == DEMO_SECRET_KEY:
            raise RuntimeError(
                "ACCORD_SECRET_KEY is the demo secret; set a long random ACCORD_SECRET_KEY "
                "before running with ACCORD_MODE=production"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
