-- Nexmark q5, hot items: bids per auction per hopping window, and the auctions with the
-- window's highest count. ksqlDB has no subqueries in FROM, so the per-window maximum is a
-- table of its own (MAX over a table: Eddy's extension), and the auctions look it up by
-- their window's start (a foreign-key join of a windowed table: Eddy's extension too).
-- The grace period admits bids up to 10 seconds late (the bids go through a repartition
-- topic by auction, written by the four partitions' readers kept within a second of event
-- time of each other). The retention keeps a window until it is emitted: without it (size +
-- grace), EMIT FINAL forgets a window that stream time jumps past, as ksqlDB does, and each
-- partition's task sees a quarter of the bids, not one every millisecond.
CREATE TABLE q5_counts AS
  SELECT auction, COUNT(*) AS num
  FROM bid WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS, RETENTION 1 MINUTE,
                       GRACE PERIOD 10 SECONDS)
  GROUP BY auction EMIT FINAL;
CREATE TABLE q5_max AS
  SELECT WINDOWSTART AS ws, MAX(num) AS maxn FROM q5_counts GROUP BY WINDOWSTART EMIT CHANGES;
CREATE TABLE q5 AS
  SELECT c.auction, c.num, m.maxn
  FROM q5_counts c JOIN q5_max m ON c.WINDOWSTART = m.ws
  WHERE c.num >= m.maxn
  EMIT CHANGES;
