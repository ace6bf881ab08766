-- q7 in batch (`eddy bench nexmark --check`): the bids whose price is their 10-second
-- window's highest.
SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
FROM bid b
JOIN (SELECT CAST(date_time AS BIGINT) / 10000 AS w, MAX(price) AS maxprice
      FROM bid GROUP BY CAST(date_time AS BIGINT) / 10000) m
  ON CAST(b.date_time AS BIGINT) / 10000 = m.w AND b.price = m.maxprice;
