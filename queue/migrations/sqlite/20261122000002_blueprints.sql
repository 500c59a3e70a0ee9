-- Stored blueprints: every push of a name is a new version, kept.
-- Times are microseconds since the Unix epoch.
CREATE TABLE blueprints (
    channel    TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, name, version)
);
