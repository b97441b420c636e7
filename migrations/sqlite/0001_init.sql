-- Append-only: never edit a migration that has shipped; add a new file instead.

-- The last `seq` given in each room; bumped in the same transaction as the insert.
CREATE TABLE room_seq (
    tenant   TEXT    NOT NULL,  -- '' is the no-tenant scope
    room     TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, room)
) WITHOUT ROWID;

CREATE TABLE chat_messages (
    tenant     TEXT    NOT NULL,
    room       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT    NOT NULL UNIQUE,
    user_id    TEXT    NOT NULL,
    user_name  TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (tenant, room, seq)
) WITHOUT ROWID;

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    tenant     TEXT,
    title      TEXT NOT NULL,
    message    TEXT NOT NULL,
    type       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    read_at    TEXT
);
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, id DESC);

CREATE TABLE room_grants (
    tenant     TEXT NOT NULL,
    room       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (tenant, room, user_id)
) WITHOUT ROWID;
