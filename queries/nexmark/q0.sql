-- Nexmark q0, pass-through: what reading, decoding, encoding and writing a record costs.
CREATE STREAM q0 AS SELECT auction, bidder, price, date_time, extra FROM bid EMIT CHANGES;
