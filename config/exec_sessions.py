"""The `exec_sessions:` section of docktrail.yaml: commands run inside `docker exec` sessions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExecSessionsConfig(BaseModel):
    """Following each exec session's processes (needs deploy/audit/docktrail-exec.rules)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = Field(
        True,
        description="Turn the audit records of the exec rule set (key auditd.exec_key) into "
        "`exec-command` events; without those rules loaded there are none to read.",
    )
    max_commands_per_session: int = Field(
        1000,
        ge=1,
        description="Most commands stored per session; the rest are counted in one "
        "`exec-overflow` event when the session ends (a loop cannot flood the trail).",
    )
    max_argv_bytes: int = Field(
        4096,
        ge=64,
        description="Longest command line stored (UTF-8 bytes of argv, after redaction); "
        "the cut is recorded in `argv_truncated`.",
    )
    exit_wait_secs: float = Field(
        2.0,
        ge=0,
        description="How long a command is held for its exit code before it is stored "
        "without one (it runs on; `exit` is then null).",
    )
    owner_wait_secs: float = Field(
        30.0,
        ge=0,
        description="How long commands wait for their exec's Engine event (the owner) "
        "before they are stored with an unknown owner.",
    )
    link_wait_secs: float = Field(
        10.0,
        gt=0,
        description="How long a process record that ties to no session yet is kept in case "
        "its exec's first pid becomes known (the Engine event may come later).",
    )
    max_pending_records: int = Field(
        20_000, ge=100, description="Most such records kept (oldest dropped first)."
    )
    max_processes: int = Field(
        100_000, ge=100, description="Most session processes followed at once."
    )
    max_sessions: int = Field(10_000, ge=10, description="Most sessions followed at once.")
