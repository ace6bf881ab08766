-- Nexmark q1, currency conversion: a projection with decimal arithmetic.
CREATE STREAM q1 AS
  SELECT auction, bidder, CAST(price AS DECIMAL(23,3)) * 0.908 AS price_eur, date_time, extra
  FROM bid EMIT CHANGES;
