"""The `kafka:` section of docktrail.yaml: publishing the trail, and `docktrail consume`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from config.base import Strict


class KafkaConsumeConfig(Strict):
    group_id: str = Field(
        "docktrail-central",
        description="Consumer group of `docktrail consume`; its committed offsets show the lag. "
        "Where to resume is kept in the central trail itself (same transaction as the records).",
    )
    batch_size: int = Field(
        2_000, ge=1, le=100_000, description="Most records written to the central trail at once."
    )
    max_record_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="A record larger than this is malformed (reported with its partition and "
        "offset, skipped).",
    )
    notify_host_alerts: bool = Field(
        False,
        description="Also send the hosts' own alerts to the destinations (each host usually "
        "notifies them itself); fleet and chain alerts are always routed.",
    )
    max_hosts: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Most publishing hosts whose chains the central trail follows. A record "
        "of a further host name is malformed (reported with its partition and offset, "
        "skipped): whoever may write to the topic cannot make the consumer's memory grow "
        "without end with made-up host names. Raise it for a larger fleet.",
    )


class KafkaConfig(Strict):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    topic: str = Field("docktrail.events", description="Topic the trail is written to.")
    client_id: str = Field(
        "docktrail", description="Client id the producer and consumer give the brokers."
    )
    acks: Literal["all", "1", "0"] = Field(
        "all",
        description="Acknowledgements a publish waits for: all in-sync replicas, the leader "
        "only, or none. The published offset only moves past what the brokers acknowledged.",
    )
    compression: Literal["none", "gzip"] = Field("none", description="Record batch compression.")
    linger_ms: int = Field(
        5, ge=0, le=10_000, description="How long the producer waits to fill a record batch."
    )
    max_batch_bytes: int = Field(
        1_048_576, ge=1024, description="Largest record batch the producer sends."
    )
    publish_batch_size: int = Field(
        10_000, ge=1, le=1_000_000, description="Trail rows read and published per round."
    )
    publish_interval_secs: float = Field(
        0.5, gt=0, le=60, description="How often `run` looks for new trail rows to publish."
    )
    retry_max_secs: float = Field(
        30.0, gt=0, description="Longest wait between attempts while the brokers are unreachable."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers."
    )
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certs.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Private key of the client certificate.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (never printed); DOCKTRAIL_KAFKA__SASL_PASSWORD."
    )
    create_topics: bool = Field(
        False,
        description="Development: create the topic when missing, with `partitions` and "
        "`replication_factor`. In production the topic is made by its owners.",
    )
    partitions: int = Field(
        3,
        ge=1,
        le=10_000,
        description="Partitions of a topic made by create_topics. Each host's records go to one "
        "partition (keyed by host name), so a host's chain stays in order.",
    )
    replication_factor: int = Field(
        1, ge=1, le=32, description="Replication factor of a topic made by create_topics."
    )
    consume: KafkaConsumeConfig = Field(
        default_factory=KafkaConsumeConfig, description="`docktrail consume` (the central trail)."
    )

    @model_validator(mode="after")
    def _credentials_fit_the_protocol(self) -> Self:
        if self.security_protocol.startswith("SASL") and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (DOCKTRAIL_KAFKA__SASL_PASSWORD)"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self
