"""The peer-credential Docker socket proxy (`docktrail proxy`, `proxy.enabled`).

Modules, one concern each: `framing` (HTTP/1.1 message boundaries), `wire`
(one socket as a protocol, bytes straight into the parse buffer), `mailbox`
(the requests a connection's responses wait for), `peer` (SO_PEERCRED and
/proc), `judge` (what a request changes, the policy), `events` (`api-call`
events and peer attribution), `record` (handing events to the trail,
fail-safe), `engines` (Engine connections made ahead), `forward` (the server:
a client's requests to the Engine), `downstream` (the Engine's responses back
in request order, each call's outcome recorded), `service` (wiring).
"""
