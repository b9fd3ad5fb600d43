-- A synd-sqlite3 session: the stock SQLite shell, with the database in a sequencer.
--
--   swift run synd sequencer --data /tmp/synd --port 8433 &
--   ./scripts/build-sqlite-tools.sh
--   .build-static/release/synd-sqlite3 --sequencer http://127.0.0.1:8433 examples/notes < examples/shell/session.sql
--
-- The same works in the stock shell after `.load .build-static/release/libsyndvfs`
-- and `.open file:examples/notes?vfs=synddb&sequencer=http://127.0.0.1:8433`.
CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
BEGIN;
INSERT INTO notes(body) VALUES ('hello from synd-sqlite3');
INSERT INTO notes(body) VALUES ('one transaction, one atomic commit');
COMMIT;
.mode list
SELECT 'notes: ' || count(*) FROM notes;
PRAGMA integrity_check;
