-- Nexmark q5, hot items: bids per auction per hopping window, and the auctions with the
-- window's highest count (a join with the per-window maximum). Waits for joins.
CREATE TABLE q5_counts AS
  SELECT auction, COUNT(*) AS num
  FROM bid WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS)
  GROUP BY auction EMIT FINAL;
CREATE STREAM q5 AS
  SELECT c.auction, c.num
  FROM q5_counts c
  JOIN (SELECT WINDOWSTART AS ws, MAX(num) AS maxn FROM q5_counts GROUP BY WINDOWSTART) m
    ON c.WINDOWSTART = m.ws
  WHERE c.num >= m.maxn
  EMIT CHANGES;
