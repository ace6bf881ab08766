-- Nexmark q7, highest bid: the maximum price per tumbling window, joined back to the bids
-- that reached it. Waits for joins (and an ungrouped windowed aggregate).
CREATE TABLE q7_max AS
  SELECT MAX(price) AS maxprice
  FROM bid WINDOW TUMBLING (SIZE 10 SECONDS)
  EMIT FINAL;
CREATE STREAM q7 AS
  SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
  FROM bid b JOIN q7_max m WITHIN 10 SECONDS
    ON b.price = m.maxprice
  WHERE b.date_time >= m.WINDOWSTART AND b.date_time < m.WINDOWEND
  EMIT CHANGES;
