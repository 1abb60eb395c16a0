"""Daemon posture (CIS Docker Benchmark section 2) from the Engine's `/info`
and the default bridge network's options.

What the Engine does not show (the `no-new-privileges` default, default
ulimits) is read from the daemon's configuration file when docktrail can read
it, and otherwise reported as `warn` with "not visible": a blind spot is
named, never passed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from listener.posture.check import Check

Info = Mapping[str, Any]
_ICC_OPTION = "com.docker.network.bridge.enable_icc"
_DEFAULT_INSECURE = {"127.0.0.0/8", "::1/128"}


def daemon_checks(
    info: Info, bridge: Info | None, daemon_json: Mapping[str, Any] | None
) -> list[Check]:
    """Every daemon check; `bridge` is None without a default bridge network."""
    return [check(info, bridge, daemon_json or {}) for check in _CHECKS]


def _icc(info: Info, bridge: Info | None, _: Mapping[str, Any]) -> Check:
    if bridge is None:
        return Check("icc", "2.2", "pass", "no default bridge network", "no-bridge")
    value = str((bridge.get("Options") or {}).get(_ICC_OPTION, "true")).lower()
    if value == "false":
        return Check("icc", "2.2", "pass", "inter-container communication is off", value)
    return Check(
        "icc", "2.2", "fail", "inter-container communication on the default bridge is on", value
    )


def _userns(info: Info, *_: Any) -> Check:
    on = any("name=userns" in str(option) for option in info.get("SecurityOptions") or [])
    if on:
        return Check("userns-remap", "2.9", "pass", "user namespace remapping is on", True)
    return Check("userns-remap", "2.9", "warn", "user namespace remapping is off", False)


def _live_restore(info: Info, *_: Any) -> Check:
    if info.get("LiveRestoreEnabled"):
        return Check("live-restore", "2.15", "pass", "live restore is on", True)
    return Check("live-restore", "2.15", "warn", "live restore is off", False)


def _no_new_privileges(_: Info, __: Info | None, daemon_json: Mapping[str, Any]) -> Check:
    value = daemon_json.get("no-new-privileges")
    if value is None:
        return Check(
            "no-new-privileges", "2.14", "warn", "not visible (daemon.json unreadable or unset)"
        )
    if value is True:
        return Check("no-new-privileges", "2.14", "pass", "no-new-privileges by default", True)
    return Check("no-new-privileges", "2.14", "warn", "no-new-privileges is not the default", False)


def _default_ulimits(_: Info, __: Info | None, daemon_json: Mapping[str, Any]) -> Check:
    ulimits = daemon_json.get("default-ulimits")
    if ulimits:
        names = tuple(sorted(str(name) for name in ulimits))
        return Check("default-ulimits", "2.8", "pass", "set: " + ", ".join(names), list(names))
    return Check("default-ulimits", "2.8", "warn", "no default ulimits seen")


def _logging(info: Info, *_: Any) -> Check:
    driver = str(info.get("LoggingDriver") or "")
    if driver in ("", "none"):
        return Check("logging-driver", "2.13", "fail", "container logs are discarded", driver)
    if driver in ("json-file", "local"):
        return Check("logging-driver", "2.13", "warn", f"logging driver {driver} (local)", driver)
    return Check("logging-driver", "2.13", "pass", f"logging driver {driver}", driver)


def _experimental(info: Info, *_: Any) -> Check:
    if info.get("ExperimentalBuild"):
        return Check("experimental", "2.18", "fail", "experimental features are on", True)
    return Check("experimental", "2.18", "pass", "experimental features are off", False)


def _insecure_registries(info: Info, *_: Any) -> Check:
    registry = info.get("RegistryConfig") or {}
    cidrs = {str(cidr) for cidr in registry.get("InsecureRegistryCIDRs") or []}
    names = {
        str(name)
        for name, index in (registry.get("IndexConfigs") or {}).items()
        if isinstance(index, Mapping) and index.get("Secure") is False
    }
    insecure = tuple(sorted((cidrs - _DEFAULT_INSECURE) | names))
    if insecure:
        return Check(
            "insecure-registries", "2.5", "fail", "insecure: " + ", ".join(insecure),
            list(insecure), insecure,
        )  # fmt: skip
    return Check("insecure-registries", "2.5", "pass", "none beyond loopback", [])


def _tcp_without_tls(info: Info, *_: Any) -> Check:
    # dockerd warns in /info about every TCP listener without TLS.
    warnings = [
        str(text)
        for text in info.get("Warnings") or []
        if "without encryption" in str(text) or "unencrypted" in str(text).lower()
    ]
    if warnings:
        return Check(
            "tcp-without-tls", "2.7", "fail", warnings[0][:200], len(warnings), tuple(warnings)
        )
    return Check("tcp-without-tls", "2.7", "pass", "no TCP listener without TLS reported", 0)


def _authorization(info: Info, *_: Any) -> Check:
    plugins = [str(p) for p in (info.get("Plugins") or {}).get("Authorization") or []]
    if plugins:
        return Check("authorization", "2.12", "pass", "plugins: " + ", ".join(plugins), plugins)
    return Check("authorization", "2.12", "warn", "no authorization plugin", [])


def _content_trust(_: Info, __: Info | None, daemon_json: Mapping[str, Any]) -> Check:
    # Content trust is a client setting (DOCKER_CONTENT_TRUST); the daemon shows it
    # only as a verification policy in daemon.json on some builds.
    trust = daemon_json.get("content-trust")
    if isinstance(trust, Mapping) and trust.get("mode") == "enforced":
        return Check("content-trust", "4.5", "pass", "daemon enforces content trust", "enforced")
    return Check("content-trust", "4.5", "warn", "not enforced by the daemon (client setting)")


_CHECKS: tuple[Callable[[Info, Info | None, Mapping[str, Any]], Check], ...] = (
    _icc, _userns, _live_restore, _no_new_privileges, _default_ulimits, _logging,
    _experimental, _insecure_registries, _tcp_without_tls, _authorization, _content_trust,
)  # fmt: skip
