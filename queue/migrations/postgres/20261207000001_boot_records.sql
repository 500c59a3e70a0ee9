-- Boot delivery's records: every boot change a job made (the audit
-- history, never expired with composes or jobs), and what each node boots
-- as last read or set, per tenant that has seen it.
CREATE TABLE boot_changes (
    id         TEXT PRIMARY KEY,
    channel    TEXT NOT NULL,
    job_id     UUID NOT NULL,
    -- The xnames changed, as ",x1,x2,": a node's history is one LIKE.
    nodes      TEXT NOT NULL,
    body       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX boot_changes_by_channel ON boot_changes (channel, created_at);

CREATE TABLE boot_nodes (
    channel     TEXT NOT NULL,
    xname       TEXT NOT NULL,
    body        JSONB NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, xname)
);
CREATE INDEX boot_nodes_by_xname ON boot_nodes (xname);
