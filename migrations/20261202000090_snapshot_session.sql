-- Account snapshots carry the Add-On's trading-hours session start (absent from older Add-Ons:
-- the CME Globex trading day is used instead).
ALTER TABLE addon_account_snapshots ADD COLUMN session_start timestamptz;

-- A snapshot the Add-On resends (after a reconnect, or an unacknowledged event) is the same
-- account at the same time: keep the first stored copy and store no more.
DELETE FROM addon_account_snapshots a
 USING addon_account_snapshots b
 WHERE a.user_id = b.user_id AND a.account = b.account AND a.taken_at = b.taken_at
   AND a.id > b.id;
DROP INDEX addon_account_snapshots_account;
ALTER TABLE addon_account_snapshots
  ADD CONSTRAINT addon_account_snapshots_replay UNIQUE (user_id, account, taken_at);
