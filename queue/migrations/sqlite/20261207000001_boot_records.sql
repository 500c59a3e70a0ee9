-- Boot delivery's records: every boot change a job made (the audit
-- history, never expired with composes or jobs), and what each node boots
-- as last read or set, per tenant that has seen it.
-- Times are microseconds since the Unix epoch.
CREATE TABLE boot_changes (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    -- The xnames changed, as ",x1,x2,": a node's history is one LIKE.
    nodes      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX boot_changes_by_channel ON boot_changes (channel, created_at);

CREATE TABLE boot_nodes (
    channel     TEXT NOT NULL,
    xname       TEXT NOT NULL,
    body        TEXT NOT NULL,
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (channel, xname)
);
CREATE INDEX boot_nodes_by_xname ON boot_nodes (xname);
