-- Rate-limit buckets are counters, not records: an unlogged table writes no WAL, so the one upsert
-- per request neither waits for a WAL flush at commit nor holds the bucket row's lock through one
-- (which caps one hot key's request rate). After a crash PostgreSQL empties the table, and every
-- key starts again with a full bucket.
ALTER TABLE "rate_limit_buckets" SET UNLOGGED;
