-- Nexmark q8, monitor new users: people who opened auctions in the window they joined (a
-- windowed stream-stream join).
CREATE STREAM q8 AS
  SELECT p.id, p.name, a.date_time AS starttime
  FROM person p JOIN auction a WITHIN 10 SECONDS ON p.id = a.seller
  EMIT CHANGES;
