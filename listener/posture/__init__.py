"""Continuous CIS posture checks: the daemon, audit rules, drift, sprawl, metering.

One module per check family; each turns what the Engine (or the host) says
into `Check` results (`check`, `cis`, `status`, `detail`). `runner` runs them
at every posture sweep of the live Docker source and records a change of
posture as a `docktrail` event; `report` builds `docktrail posture`.
"""
