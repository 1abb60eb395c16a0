"""aiokafka clients made from `kafka:` settings, and aiokafka's errors translated.

aiokafka clients follow `start()` … `stop()`; every send or fetch error is a
`KafkaError` whose `retriable` says whether trying again may work. Here they
become `SinkError`s (retriable) carrying what was being done, so callers
handle one family (`config.errors`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

from config.errors import ConfigError, SinkError
from config.models import KafkaConfig

# tansu and some managed clusters have no idempotent producers; ordering per
# host comes from one partition per host and awaiting each round's acks instead.
IDEMPOTENCE = False


def common_options(config: KafkaConfig) -> dict[str, Any]:
    """Connection options shared by producer, consumer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(config)
    if config.security_protocol.startswith("SASL") and config.sasl_password is not None:
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = config.sasl_password.get_secret_value()
    return options


def producer_options(config: KafkaConfig) -> dict[str, Any]:
    return {
        **common_options(config),
        "acks": "all" if config.acks == "all" else int(config.acks),
        "enable_idempotence": IDEMPOTENCE,
        "compression_type": None if config.compression == "none" else config.compression,
        "linger_ms": config.linger_ms,
        "max_batch_size": config.max_batch_bytes,
        "max_request_size": max(config.max_batch_bytes, 1_048_576),
    }


def consumer_options(config: KafkaConfig) -> dict[str, Any]:
    return {
        **common_options(config),
        "group_id": config.consume.group_id,
        "enable_auto_commit": False,  # the central trail holds the offsets it stored
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": max(config.consume.max_record_bytes, 1_048_576),
    }


def _ssl_context(config: KafkaConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(config.ssl_cafile) if config.ssl_cafile else None
        )
        if config.ssl_certfile is not None:
            context.load_cert_chain(
                str(config.ssl_certfile),
                str(config.ssl_keyfile) if config.ssl_keyfile else None,
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"kafka TLS files: {exc}") from exc
    return context


@contextlib.asynccontextmanager
async def kafka_errors(doing: str, config: KafkaConfig) -> AsyncIterator[None]:
    """Translate aiokafka's errors into `SinkError` naming the brokers and the operation."""
    from aiokafka.errors import KafkaError

    try:
        yield
    except KafkaError as exc:
        raise SinkError(
            f"kafka {config.bootstrap_servers}: {doing}: {type(exc).__name__}: {exc}"
        ) from exc


async def ensure_topic(config: KafkaConfig) -> None:
    """Create the topic when `create_topics` is on and it does not exist yet."""
    if not config.create_topics:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**common_options(config))
    async with kafka_errors(f"create topic {config.topic}", config):
        await admin.start()
        try:
            if config.topic in await admin.list_topics():
                return
            topic = NewTopic(config.topic, config.partitions, config.replication_factor)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
        finally:
            await admin.close()
