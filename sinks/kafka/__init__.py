"""The Kafka side of the trail: hosts publish their trail, `docktrail consume` builds the fleet's.

- `records`: the wire format (one JSON record per trail row, keyed by host);
- `client`: aiokafka clients from `kafka:` settings, errors translated;
- `publisher`: publishing a local trail from its persisted position;
- `chains`: the central trail's per-host chain verification;
- `chainstate`: its data: each host's chain state (kept in `source_state`) and what a
  batch of records becomes.
"""
