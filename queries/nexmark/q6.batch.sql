-- q6 in batch (`eddy bench nexmark --check`): each auction's winning price among the bids
-- placed while it was open, then the mean of the seller's last 11 by closing time.
WITH winning AS (
  SELECT a.id AS auction_id, a.seller AS seller, MAX(b.price) AS final_price,
         a.expires AS close_time
  FROM auction a JOIN bid b ON a.id = b.auction
  WHERE b.date_time BETWEEN a.date_time AND a.expires
    AND b.date_time <= a.date_time + INTERVAL '10' SECOND
  GROUP BY a.id, a.seller, a.expires
)
SELECT auction_id, seller, close_time,
       AVG(final_price) OVER (PARTITION BY seller ORDER BY close_time, auction_id
                              ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM winning;
