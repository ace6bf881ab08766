-- q4 in batch (`eddy bench nexmark --check`): the join's WITHIN 1 HOURS as a condition on
-- the two event times; the table q4 reads holds each auction's latest winning price.
WITH winning AS (
  SELECT a.id AS auction_id, a.category AS category, MAX(b.price) AS final_price
  FROM auction a JOIN bid b ON a.id = b.auction
  WHERE b.date_time BETWEEN a.date_time AND a.expires
    AND b.date_time BETWEEN a.date_time - INTERVAL '1' HOUR AND a.date_time + INTERVAL '1' HOUR
  GROUP BY a.id, a.category
)
SELECT category, AVG(final_price) AS avg_final FROM winning GROUP BY category;
