-- The tables `region-replicator migrate` creates at schema version 2 (the first released
-- schema), with the standard columns, and a few rows in each. Frozen: never edit this file
-- when the schema changes; add schema-v<N>.sql for the new version instead. SchemaVersionTests
-- loads each fixture into a fresh database and runs the current `migrate` over it.
-- (migrate also creates pgcrypto and the messages_derive_message_id trigger; it re-creates
-- the trigger on every run, so the fixture leaves them out.)
CREATE TABLE replicator_schema (
    table_name text PRIMARY KEY,
    created_by_migrate boolean NOT NULL,
    schema_version int NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE replicator_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    last_record_at timestamptz,
    updated_at timestamptz,
    PRIMARY KEY (consumer_group, topic, partition));
CREATE TABLE replicator_message_tombstones (
    message_id uuid PRIMARY KEY,
    session_id text NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz NOT NULL);
CREATE TABLE replicator_session_tombstones (
    session_id text PRIMARY KEY,
    deleted_at timestamptz NOT NULL);
CREATE TABLE replicator_dead_letters (
    id bigserial PRIMARY KEY,
    topic text,
    partition int,
    "offset" bigint,
    record_key bytea,
    payload bytea,
    error text,
    first_seen timestamptz,
    retried_at timestamptz,
    resolved boolean NOT NULL DEFAULT false);
CREATE UNIQUE INDEX replicator_dead_letters_record_idx ON replicator_dead_letters (topic, partition, "offset");
CREATE TABLE messages (
    "message_id" uuid PRIMARY KEY,
    "session_id" text NOT NULL,
    "role" text NOT NULL,
    "content" text NOT NULL,
    "region" text NOT NULL,
    "created_at" timestamptz NOT NULL,
    "version" bigint NOT NULL DEFAULT 1,
    "replicated_at" timestamptz NOT NULL DEFAULT now());
CREATE INDEX messages_session_created_idx ON messages ("session_id", "created_at");

INSERT INTO replicator_schema (table_name, created_by_migrate, schema_version) VALUES ('messages', true, 2);
INSERT INTO replicator_offsets VALUES ('region-replicator', 'chat-messages', 0, 17, '2026-01-02T03:04:05Z', '2026-01-02T03:04:06Z');
INSERT INTO messages VALUES
    ('00000000-0000-5000-8000-000000000001', 'fixture-s1', 'user', 'hello from v2', 'us-east-1', '2026-01-02T03:04:05Z', 1, '2026-01-02T03:04:06Z'),
    ('00000000-0000-5000-8000-000000000002', 'fixture-s1', 'assistant', 'hi', 'eu-west-1', '2026-01-02T03:04:07Z', 3, '2026-01-02T03:04:08Z');
INSERT INTO replicator_message_tombstones VALUES ('00000000-0000-5000-8000-000000000003', 'fixture-s1', 2, '2026-01-02T03:05:00Z');
INSERT INTO replicator_session_tombstones VALUES ('fixture-s0', '2026-01-02T03:00:00Z');
INSERT INTO replicator_dead_letters (topic, partition, "offset", record_key, payload, error, first_seen)
    VALUES ('chat-messages', 0, 5, 'k', 'not json', 'invalid JSON', '2026-01-02T03:04:05Z');
