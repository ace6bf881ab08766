-- Nexmark q2, selection: a filter that keeps few bids.
CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 EMIT CHANGES;
