-- q5 in batch (`eddy bench nexmark --check`): each bid in the five 10-second windows that
-- start every 2 seconds and hold it, counts per auction and window, and the counts that are
-- their window's maximum.
WITH hops AS (
  SELECT b.auction, (CAST(b.date_time AS BIGINT) / 2000 - h.k) * 2000 AS windowstart
  FROM bid b CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS h(k)
),
counts AS (
  SELECT auction, windowstart, windowstart + 10000 AS windowend, COUNT(*) AS num
  FROM hops GROUP BY auction, windowstart
)
SELECT c.auction, c.windowstart, c.windowend, c.num
FROM counts c
JOIN (SELECT windowstart, MAX(num) AS maxn FROM counts GROUP BY windowstart) m
  ON c.windowstart = m.windowstart
WHERE c.num >= m.maxn;
