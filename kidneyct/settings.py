"""All of kidneyct's settings, read once from `KIDNEYCT_*` environment variables in `main`.

Nothing below the command line reads `os.environ`: commands build one `Settings` and pass
what each component needs down to it. The settings are flat (one env variable per field,
`KIDNEYCT_<FIELD>`) so that every variable in the docs/settings.md table maps to exactly one field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from classifier.study.rule import DEFAULT_STUDY_RULE, StudyRule

DEFAULT_DATA_DIR = Path("kidneyct-data")

# Constrained types: a bad value is refused when the command starts, not discovered later.
Port = Annotated[int, Field(ge=0, le=65535)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "json", "console"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def check_database_url(url: str) -> None:
    """Raise ValueError unless SQLAlchemy can parse `url` and load its dialect and driver.

    Messages never repeat the URL: it may hold a password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL; {_URL_EXAMPLE}") from None
    if parsed.drivername == "postgres":
        raise ValueError(f"name the driver: postgresql+psycopg://... ({_URL_EXAMPLE})")
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError):
        raise ValueError(f"no installed driver for {parsed.drivername!r}; {_URL_EXAMPLE}") from None


_DEVICE = re.compile(r"^(cpu|gpu:\d+)$")  # as classifier.model.device parses it
_URL_EXAMPLE = "use postgresql+psycopg://USER:PASSWORD@HOST:5432/DB or sqlite:////path/to/kidneyct.db"


class Settings(BaseSettings):
    """Every setting of every kidneyct command; docs/settings.md documents each one."""

    model_config = SettingsConfigDict(env_prefix="KIDNEYCT_", extra="ignore", frozen=True)

    # --- general -------------------------------------------------------------------------
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Folder for the embedded default's files.")
    log_format: LogFormat = Field(
        "auto", description="`json`, `console` or `auto` (JSON unless on a terminal)."
    )
    log_level: LogLevel = Field(
        "info", description="Lowest log level written: debug, info, warning, error or critical."
    )
    log_redact_accession: bool = Field(
        False, description="Also remove AccessionNumber from log events (it can identify a patient)."
    )
    metrics_port: Port = Field(0, description="Port of the Prometheus /metrics endpoint; 0 turns it off.")
    metrics_host: str = Field("0.0.0.0", description="Address the /metrics endpoint binds.")

    # --- database --------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL; default: SQLite file `<data_dir>/kidneyct.db`.",
    )

    # --- archive ---------------------------------------------------------------------------
    archive_dir: Path | None = Field(
        None, description="Where received instances are kept; default `<data_dir>/archive`."
    )
    archive_url: str | None = Field(
        None,
        description="`s3://bucket/prefix` keeps the archive on S3-compatible object storage; unset: the "
        "local `archive_dir`. Credentials and region: the standard AWS variables or profile.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3 endpoint of a non-AWS store (MinIO, Ceph RGW, ...); unset: AWS S3."
    )
    s3_verify_tls: bool = Field(True, description="Verify the S3 endpoint's TLS certificate.")
    s3_ca_bundle: Path | None = Field(None, description="CA bundle (PEM) for the S3 endpoint's certificate.")
    s3_max_attempts: PositiveInt = Field(
        5, description="S3 attempts per request, with backoff on throttling, 5xx and timeouts."
    )
    s3_connect_timeout_s: PositiveFloat = Field(5.0, description="S3 connect timeout.")
    s3_read_timeout_s: PositiveFloat = Field(30.0, description="S3 read timeout per request.")
    s3_part_bytes: PositiveInt = Field(
        16 * 1024**2, description="Larger instances go up in multipart parts of this size (>= 5 MiB)."
    )
    max_instance_bytes: PositiveInt = Field(2 * 1024**3, description="Larger C-STORE datasets are refused.")
    verify_compressed_pixel_data: bool = Field(
        True, description="Decode the first frame of compressed pixel data before answering success."
    )
    max_decoded_bytes: PositiveInt = Field(
        512 * 1024**2,
        description="Memory budget per instance: larger decoded pixel data (Rows x Columns x samples x "
        "bytes x frames), or a deflated dataset inflating past it, is refused (0xC004) by the listener "
        "and failed by the worker before any decoding.",
    )
    max_deflate_ratio: PositiveInt = Field(
        100,
        description="A deflated dataset inflating to more than 16 MiB and more than this many times its "
        "deflated size is a decompression bomb: refused (0xC004) by the listener and failed by the "
        "worker as soon as the ratio is passed while inflating.",
    )
    release_hints: bool = Field(
        True,
        description="On an association's release, publish a hint per study it stored so workers complete "
        "it early; off while workers or catalogues older than the hints still read the stream.",
    )

    # --- kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the embedded durable database queue."
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates."
    )
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* security protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_partitions: PositiveInt = Field(
        4, description="Partitions of each topic created by `kidneyct kafka init`."
    )
    kafka_replication_factor: PositiveInt = Field(
        1,
        description="Replication factor of the topics; `min.insync.replicas` is set to one fewer (at least 1).",
    )
    kafka_retention_ms: Annotated[int, Field(ge=-1)] = Field(
        7 * 24 * 3600 * 1000,
        description="How long the topics keep events (`retention.ms`; -1 forever): how far back a consumer "
        "group can replay them. `kidneyct reprocess` does not need it (it reads the archive's catalogue).",
    )
    kafka_retention_bytes: Annotated[int, Field(ge=-1)] = Field(
        -1, description="Most bytes kept per partition (`retention.bytes`); -1: no size limit."
    )
    kafka_publish_timeout_s: float = Field(10.0, description="Longest wait for the broker's acknowledgement.")
    topic_instances: str = Field("kidneyct.instances", description="Topic of received-instance events.")
    topic_results: str = Field("kidneyct.results", description="Topic of prediction and study results.")
    topic_dead_letter: str = Field(
        "kidneyct.dead-letter", description="Topic of events that cannot be processed."
    )
    consumer_group: str = Field(
        "kidneyct-classifier", description="Consumer group of the classifier workers."
    )
    catalog_group: str = Field(
        "kidneyct-catalog", description="Consumer group of the catalogue (instance rows before any model)."
    )
    catalog_in_listener: bool = Field(
        True,
        description="`listen` and `serve` also run the catalogue; false when `kidneyct catalog` runs apart.",
    )

    # --- DICOM listener --------------------------------------------------------------------
    ae_title: str = Field("KIDNEYCT", description="Our AE title; associations calling another are rejected.")
    dicom_host: str = Field("0.0.0.0", description="Address the listener binds.")
    dicom_port: Port = Field(11112, description="Port the listener binds.")
    allowed_calling_aes: str = Field(
        "", description="Comma-separated calling AE titles allowed, optionally `AE@host`; empty allows all."
    )
    extra_storage_sop_classes: str = Field(
        "", description="Comma-separated extra Storage SOP Class UIDs accepted besides CT and Enhanced CT."
    )
    dicom_reuse_port: bool = Field(
        False, description="SO_REUSEPORT: N listener processes on one host share the DICOM port."
    )
    max_associations: PositiveInt = Field(16, description="Associations served at once.")
    max_associations_per_peer: PositiveInt = Field(
        4, description="Associations at once from one source address; one more is rejected (transient)."
    )
    max_pending_connections: PositiveInt = Field(
        64,
        description="Connections that have not completed A-ASSOCIATE yet, beyond which new ones are closed.",
    )
    max_pending_connections_per_peer: PositiveInt = Field(
        4,
        description="Connections not yet associated from one source address, beyond which new ones are closed.",
    )
    association_establish_timeout_s: PositiveFloat = Field(
        10.0,
        description="A connection (TLS handshake included) not associated this long after connect is closed.",
    )
    association_max_duration_s: PositiveFloat = Field(
        3600.0,
        description="Longest life of an association's connection, from connect; then its socket is closed.",
    )
    message_gap_timeout_s: PositiveFloat = Field(
        10.0,
        description="Longest silence inside one DIMSE message (a dataset announced or begun); then the association is aborted.",
    )
    max_pdu_size: NonNegativeInt = Field(
        1024 * 1024,
        description="Maximum PDU size we receive (bounds memory per association); 0 means unlimited.",
    )
    acse_timeout_s: float = Field(30.0, description="ACSE timeout.")
    dimse_timeout_s: float = Field(60.0, description="DIMSE timeout.")
    network_timeout_s: float = Field(
        60.0,
        description="Network timeout: silence between PDUs, and the most one PDU takes from first byte to last.",
    )
    shutdown_grace_s: float = Field(30.0, description="How long SIGTERM waits for associations in flight.")
    tls_cert: Path | None = Field(None, description="Server certificate (PEM); with tls_key turns TLS on.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_ca: Path | None = Field(None, description="CA bundle; when set, clients must present a certificate.")

    # --- classifier worker -----------------------------------------------------------------
    device: str = Field("cpu", description="`cpu` or `gpu:N`: the one device a worker uses.")
    batch_size: PositiveInt = Field(32, description="Most images predicted in one batch.")
    batch_max_wait_ms: NonNegativeInt = Field(
        50, description="Longest time spent filling a batch; it closes sooner when nothing more is waiting."
    )
    decode_workers: PositiveInt = Field(2, description="Threads that decode DICOM beside inference.")
    mixed_precision: bool = Field(False, description="Run inference in mixed float16.")
    window_center: float = Field(40.0, description="Default window centre (HU) for training from DICOM.")
    window_width: float = Field(400.0, description="Default window width (HU) for training from DICOM.")
    model_dir: Path | None = Field(
        None, description="Where model artifacts are kept; default `<data_dir>/models`."
    )
    model_poll_s: float = Field(
        5.0, description="How often a worker checks for a newly active model version."
    )
    dead_letter_limit_window: NonNegativeInt = Field(
        50, description="A worker stops when most of this many recent events found no archive file; 0: never."
    )
    dead_letter_limit_ratio: Probability = Field(
        0.5, description="The share of that window, unreadable from the archive, that stops the worker."
    )
    study_abnormal_min_slices: PositiveInt | None = Field(
        None,
        description="k: slices an abnormal class needs for the study label. Unset: the model card's (tuned on "
        "validation), else 2. Set (or t set): overrides every model's rule.",
    )
    study_abnormal_min_probability: Probability | None = Field(
        None, description="t: calibrated probability those slices need. Unset: the model card's, else 0.5."
    )
    study_max_shifted_fraction: Probability = Field(
        0.25,
        description="A study with more than this share of slices flagged as unlike the training data is "
        "indeterminate (models with a shift detector).",
    )
    abstain_target_accuracy: Probability = Field(
        0.90,
        description="Training chooses the evidence a study needs to be answered so that answered validation "
        "scans reach this accuracy; below it the study is indeterminate.",
    )
    study_stable_age_s: float = Field(
        60.0, description="A study is complete this long after its last instance."
    )
    study_release_grace_s: float = Field(
        3.0,
        description="A study whose sending association was released (and got nothing since) is complete "
        "this long after its last instance; study_stable_age_s stays the fallback.",
    )

    # --- results back to PACS --------------------------------------------------------------
    result_destinations: str = Field(
        "",
        description="Comma-separated `AE@host:port` that get each study's SR and heat map; empty sends nothing.",
    )
    result_heatmap: Literal["pmap", "sc", "none"] = Field(
        "pmap", description="`pmap` (Parametric Map), `sc` (Secondary Capture, burned in) or `none`."
    )
    result_max_attempts: PositiveInt = Field(
        10, description="Delivery attempts before a result is marked failed."
    )
    result_retry_initial_s: PositiveFloat = Field(
        5.0, description="Wait after the first failed delivery (doubles)."
    )
    result_retry_max_s: PositiveFloat = Field(600.0, description="Longest wait between delivery attempts.")
    result_poll_s: PositiveFloat = Field(2.0, description="How often the sender looks for results to send.")
    result_lease_s: PositiveFloat = Field(
        300.0,
        description="How long a sender holds a delivery it took; a killed sender's rows are due after it.",
    )
    result_tls_ca: Path | None = Field(
        None, description="CA bundle that destinations' certificates must chain to; set: send over TLS."
    )
    result_tls_cert: Path | None = Field(
        None, description="Our client certificate (PEM) for TLS destinations."
    )
    result_tls_key: Path | None = Field(None, description="Its private key (PEM).")

    # --- review station (`kidneyct review`) ------------------------------------------------
    review_host: str = Field("127.0.0.1", description="Address the review web app binds.")
    review_port: Port = Field(8080, description="Port of the review web app.")
    review_secret_key: SecretStr | None = Field(
        None,
        description="Key that signs review sessions (32+ random characters); unset: a new one per start, signing everyone out.",
    )
    review_tls_cert: Path | None = Field(
        None, description="Certificate (PEM) for serving the review app over HTTPS directly."
    )
    review_tls_key: Path | None = Field(None, description="Its private key (PEM).")
    review_secure_cookies: bool = Field(
        False,
        description="Mark session cookies Secure (on by itself with a TLS certificate; set it behind a TLS proxy).",
    )
    review_forwarded_allow_ips: str = Field(
        "", description="Reverse proxies whose X-Forwarded-For/-Proto are believed (comma-separated IPs)."
    )
    review_identifier: Literal["accession", "study_uid"] = Field(
        "accession", description="What the worklist shows to identify a study: `accession` or `study_uid`."
    )
    review_page_size: PositiveInt = Field(50, description="Worklist rows per page.")
    review_session_max_age_s: PositiveInt = Field(
        8 * 3600, description="A review session ends this long after sign-in."
    )
    review_signin_max_failures: PositiveInt = Field(
        5, description="Failed sign-ins per account within the window before that account is refused."
    )
    review_signin_max_failures_per_address: PositiveInt = Field(
        20, description="Failed sign-ins per client address within the window before that address is refused."
    )
    review_signin_window_s: PositiveInt = Field(900, description="The window those failures are counted in.")

    # --- trainer ---------------------------------------------------------------------------
    image_size: PositiveInt = Field(224, description="Training input size (pixels, square).")
    train_dir: Path | None = Field(None, description="Where training runs write; default `<data_dir>/runs`.")

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @field_validator("archive_url")
    @classmethod
    def _archive_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError("must be a local folder, file:// or s3://bucket/prefix")
        if value.startswith("s3://") and not value.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError("s3:// URL names no bucket")
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE.match(value.strip().lower()):
            raise ValueError("must be `cpu` or `gpu:N` (N: the GPU's index)")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    # --- derived paths ---------------------------------------------------------------------
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'kidneyct.db').resolve()}"

    def study_rule(self) -> tuple[StudyRule, bool]:
        """The study rule of the settings and whether they set it (then it overrides every model card's)."""
        k, t = self.study_abnormal_min_slices, self.study_abnormal_min_probability
        return StudyRule(
            k or DEFAULT_STUDY_RULE.min_slices, DEFAULT_STUDY_RULE.min_probability if t is None else t
        ), (k is not None or t is not None)

    def resolved_archive_dir(self) -> Path:
        """The local archive folder (also where a local `archive_url` points)."""
        if self.archive_url is not None and not self.uses_object_store:
            return Path(self.archive_url.removeprefix("file://"))
        return self.archive_dir if self.archive_dir is not None else self.data_dir / "archive"

    @property
    def uses_object_store(self) -> bool:
        return bool(self.archive_url) and str(self.archive_url).startswith("s3://")

    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    def resolved_train_dir(self) -> Path:
        return self.train_dir if self.train_dir is not None else self.data_dir / "runs"

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap)
