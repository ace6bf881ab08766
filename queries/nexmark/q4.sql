-- Nexmark q4, average winning price per category: a windowed stream-stream join, then an
-- aggregation over a table.
CREATE TABLE q4_winning WITH (KEY_FORMAT='JSON') AS
  SELECT a.id AS auction_id, a.category AS category, MAX(b.price) AS final_price
  FROM auction a JOIN bid b WITHIN 1 HOURS ON a.id = b.auction
  WHERE b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.category EMIT CHANGES;
CREATE TABLE q4 AS
  SELECT category, AVG(final_price) AS avg_final FROM q4_winning GROUP BY category EMIT CHANGES;
