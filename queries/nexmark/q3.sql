-- Nexmark q3, local item suggestion: auctions joined with their sellers (a stream-table
-- join), filtered on both sides.
CREATE TABLE person_t AS
  SELECT id, LATEST_BY_OFFSET(name) AS name, LATEST_BY_OFFSET(city) AS city,
         LATEST_BY_OFFSET(state) AS state
  FROM person GROUP BY id EMIT CHANGES;
CREATE STREAM q3 AS
  SELECT a.seller, p.name, p.city, p.state, a.id
  FROM auction a JOIN person_t p ON a.seller = p.id
  WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')
  EMIT CHANGES;
