"""All of kidneyct's settings, read once from `KIDNEYCT_*` environment variables in `main`.

Nothing below the command line reads `os.environ`: commands build one `Settings` and pass
what each component needs down to it. The settings are flat (one env variable per field,
`KIDNEYCT_<FIELD>`) so that every variable in the README table maps to exactly one field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("kidneyct-data")


class Settings(BaseSettings):
    """Every setting of every kidneyct command; the README's settings table documents each one."""

    model_config = SettingsConfigDict(env_prefix="KIDNEYCT_", extra="ignore", frozen=True)

    # --- general -------------------------------------------------------------------------
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Folder for the embedded default's files.")
    log_format: str = Field("auto", description="`json`, `console` or `auto` (JSON unless on a terminal).")
    log_level: str = Field("info", description="Lowest log level written.")
    log_redact_accession: bool = Field(
        False, description="Also remove AccessionNumber from log events (it can identify a patient)."
    )
    metrics_port: int = Field(0, description="Port of the Prometheus /metrics endpoint; 0 turns it off.")
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
    max_instance_bytes: int = Field(2 * 1024**3, description="Larger C-STORE datasets are refused.")

    # --- kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the embedded durable database queue."
    )
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_SSL, ...")
    kafka_partitions: int = Field(4, description="Partitions of each topic created by `kidneyct kafka init`.")
    kafka_replication_factor: int = Field(1, description="Replication factor of the topics.")
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
    dicom_port: int = Field(11112, description="Port the listener binds.")
    allowed_calling_aes: str = Field(
        "", description="Comma-separated calling AE titles allowed, optionally `AE@host`; empty allows all."
    )
    extra_storage_sop_classes: str = Field(
        "", description="Comma-separated extra Storage SOP Class UIDs accepted besides CT and Enhanced CT."
    )
    max_associations: int = Field(16, description="Associations served at once.")
    max_pdu_size: int = Field(0, description="Maximum PDU size we receive; 0 means unlimited.")
    acse_timeout_s: float = Field(30.0, description="ACSE timeout.")
    dimse_timeout_s: float = Field(60.0, description="DIMSE timeout.")
    network_timeout_s: float = Field(60.0, description="Network timeout.")
    shutdown_grace_s: float = Field(30.0, description="How long SIGTERM waits for associations in flight.")
    tls_cert: Path | None = Field(None, description="Server certificate (PEM); with tls_key turns TLS on.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_ca: Path | None = Field(None, description="CA bundle; when set, clients must present a certificate.")

    # --- classifier worker -----------------------------------------------------------------
    device: str = Field("cpu", description="`cpu` or `gpu:N`: the one device a worker uses.")
    batch_size: int = Field(32, description="Most images predicted in one batch.")
    batch_max_wait_ms: int = Field(50, description="Longest wait to fill a batch.")
    decode_workers: int = Field(2, description="Threads that decode DICOM beside inference.")
    mixed_precision: bool = Field(False, description="Run inference in mixed float16.")
    window_center: float = Field(40.0, description="Default window centre (HU) for training from DICOM.")
    window_width: float = Field(400.0, description="Default window width (HU) for training from DICOM.")
    model_dir: Path | None = Field(
        None, description="Where model artifacts are kept; default `<data_dir>/models`."
    )
    model_poll_s: float = Field(
        5.0, description="How often a worker checks for a newly active model version."
    )
    study_abnormal_min_slices: int = Field(
        2, description="k: slices an abnormal class needs for the study label."
    )
    study_abnormal_min_probability: float = Field(0.5, description="t: probability those slices need.")
    study_stable_age_s: float = Field(
        60.0, description="A study is complete this long after its last instance."
    )

    # --- trainer ---------------------------------------------------------------------------
    image_size: int = Field(224, description="Training input size (pixels, square).")
    train_dir: Path | None = Field(None, description="Where training runs write; default `<data_dir>/runs`.")

    # --- derived paths ---------------------------------------------------------------------
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'kidneyct.db').resolve()}"

    def resolved_archive_dir(self) -> Path:
        return self.archive_dir if self.archive_dir is not None else self.data_dir / "archive"

    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    def resolved_train_dir(self) -> Path:
        return self.train_dir if self.train_dir is not None else self.data_dir / "runs"

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap)
