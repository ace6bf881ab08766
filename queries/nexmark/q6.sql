-- Nexmark q6, average selling price by seller: for each closed auction, the mean winning
-- price of its seller's last 10 closed auctions (it and the 10 before it). The window is an
-- OVER window, Eddy's extension of ksqlDB's SQL; ksqlDB's own SQL builds the rest:
--
-- 1. Each bid placed while its auction was open, stamped with the auction's closing time
--    (bids come after their auction, and auctions last well under 10 seconds here).
CREATE STREAM q6_bids WITH (TIMESTAMP='CLOSE_TIME') AS
  SELECT a.id AS auction_id, a.seller AS seller, b.price AS price, a.expires AS close_time
  FROM auction a JOIN bid b WITHIN (0 SECONDS, 10 SECONDS) GRACE PERIOD 5 SECONDS
    ON a.id = b.auction
  WHERE b.date_time BETWEEN a.date_time AND a.expires
  EMIT CHANGES;
-- 2. Each auction's winning price, once it has closed: an auction's bids all carry its
--    closing time, so they fall in one 1-millisecond window, final once stream time has
--    passed it by the grace period. (RETENTION outlasts the grace period: with the default,
--    size + grace, a window that stream time jumps past expires unemitted, as in ksqlDB.)
CREATE TABLE q6_winning AS
  SELECT auction_id, LATEST_BY_OFFSET(seller) AS seller, MAX(price) AS final_price,
         MAX(close_time) AS close_time
  FROM q6_bids
  WINDOW TUMBLING (SIZE 1 MILLISECOND, RETENTION 1 MINUTE, GRACE PERIOD 5 SECONDS)
  GROUP BY auction_id EMIT FINAL;
-- 3. The closed auctions as a stream of events (a stream over the table's topic).
CREATE STREAM q6_closed (auction_id BIGINT KEY, seller BIGINT, final_price BIGINT,
                         close_time TIMESTAMP)
  WITH (KAFKA_TOPIC='Q6_WINNING', VALUE_FORMAT='JSON', WINDOW_TYPE='TUMBLING',
        WINDOW_SIZE='1 MILLISECOND', TIMESTAMP='close_time');
-- 4. The OVER window: each seller's closed auctions in closing order (auction id breaks ties).
CREATE STREAM q6 AS
  SELECT auction_id, seller, close_time,
         AVG(final_price) OVER (PARTITION BY seller ORDER BY close_time, auction_id
                                ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
  FROM q6_closed
  EMIT CHANGES;
