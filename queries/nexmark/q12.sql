-- Nexmark q12, processing-time windows: bids per bidder per 10-second tumbling window of the
-- time the bids arrived, not the time they were made. ksqlDB windows on a record's timestamp,
-- so the bids are first copied to a stream whose TIMESTAMP is the wall clock when each was
-- read (UNIX_TIMESTAMP() without argument), and the window counts over that stream.
-- A window's counts are final once a later bid has arrived past the window's end (there is no
-- wall-clock timer: the last window stays open until more bids come). RETENTION keeps an open
-- window's counts through a pause in the bids of up to an hour (without it, a bid arriving more
-- than a window size after the window's end would expire the window unemitted, as EMIT FINAL
-- does in ksqlDB when stream time jumps). The arrivals stream has one partition: stream time is
-- a partition's own, and the one closing bid must close every bidder's last window. Each run's
-- rows differ.
CREATE STREAM q12_arrivals WITH (TIMESTAMP='PROCTIME', PARTITIONS=1) AS
  SELECT bidder, UNIX_TIMESTAMP() AS proctime FROM bid EMIT CHANGES;
CREATE TABLE q12 AS
  SELECT bidder, COUNT(*) AS bid_count, WINDOWSTART AS starttime, WINDOWEND AS endtime
  FROM q12_arrivals WINDOW TUMBLING (SIZE 10 SECONDS, RETENTION 1 HOUR)
  GROUP BY bidder EMIT FINAL;
