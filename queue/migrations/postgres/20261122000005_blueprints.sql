-- Stored blueprints: every push of a name is a new version, kept.
CREATE TABLE blueprints (
    channel    TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    body       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, name, version)
);
