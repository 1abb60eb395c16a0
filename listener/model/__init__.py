"""The data model: events, alerts, findings, container configuration, image references.

The second layer (docs/ARCHITECTURE.md): it imports only `config`, and
everything above it (trail semantics, sinks, notifiers, rules, sources, the
pipeline and the CLI) speaks in these types.
"""
