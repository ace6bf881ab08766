-- A continuous aggregation read with pull queries: spend per customer, kept up to date as
-- orders arrive, and queried like a database table: a key lookup, IN, a range, ORDER BY.
CREATE STREAM purchases (id BIGINT KEY, customer STRING, amount DOUBLE)
  WITH (kafka_topic='purchases', value_format='JSON', partitions=1);
INSERT INTO purchases (id, customer, amount) VALUES (1, 'ann', 10.0);
INSERT INTO purchases (id, customer, amount) VALUES (2, 'bob', 4.5);
INSERT INTO purchases (id, customer, amount) VALUES (3, 'ann', 2.5);
INSERT INTO purchases (id, customer, amount) VALUES (4, 'cat', 30.0);
SET 'auto.offset.reset'='earliest';
CREATE TABLE spend AS
  SELECT customer, COUNT(*) AS orders, SUM(amount) AS total FROM purchases
  GROUP BY customer EMIT CHANGES;
SELECT customer, total FROM spend EMIT CHANGES LIMIT 4;
SELECT * FROM spend WHERE customer = 'ann';
SELECT customer, total FROM spend WHERE customer IN ('bob', 'cat') ORDER BY customer;
SELECT customer FROM spend WHERE total > 5 ORDER BY total DESC;
