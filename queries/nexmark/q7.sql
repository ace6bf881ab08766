-- Nexmark q7, highest bid: the highest price of each 10-second tumbling window, joined back
-- to the bids that reached it. Two extensions of ksqlDB's SQL: an aggregation without GROUP BY
-- (one row per window), and a stream joined WITHIN an interval to a windowed table's rows.
-- A window's maximum is final once stream time passes the window's end and its grace period,
-- and the join keeps the bids until the maxima have caught up with them.
CREATE TABLE q7_max AS
  SELECT MAX(price) AS maxprice
  FROM bid WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 5 SECONDS)
  EMIT FINAL;
CREATE STREAM q7 AS
  SELECT b.auction, b.price AS price, b.bidder, b.date_time, b.extra
  FROM bid b JOIN q7_max m WITHIN 10 SECONDS GRACE PERIOD 10 SECONDS
    ON b.price = m.maxprice
  WHERE UNIX_TIMESTAMP(b.date_time) >= m.WINDOWSTART AND UNIX_TIMESTAMP(b.date_time) < m.WINDOWEND
  EMIT CHANGES;
