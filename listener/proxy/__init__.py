"""The peer-credential Docker socket proxy (`docktrail proxy`, `proxy.enabled`).

Modules, one concern each: `framing` (HTTP/1.1 message boundaries), `peer`
(SO_PEERCRED and /proc), `judge` (what a request changes, the policy),
`events` (`api-call` events and peer attribution), `record` (handing events
to the trail, fail-safe), `forward` (the server), `service` (wiring).
"""
