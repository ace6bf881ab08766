-- A derived topic: CSAS filters a stream of orders and reshapes it into a new topic,
-- big_orders, that any Kafka client reads (kcat -C -t big_orders against the broker).
CREATE STREAM orders (id BIGINT KEY, customer STRING, qty INT, price DOUBLE)
  WITH (kafka_topic='orders', value_format='JSON', partitions=1);
INSERT INTO orders (id, customer, qty, price) VALUES (1, 'ann', 1, 9.5);
INSERT INTO orders (id, customer, qty, price) VALUES (2, 'bob', 5, 20.0);
INSERT INTO orders (id, customer, qty, price) VALUES (3, 'ann', 12, 1.25);
SET 'auto.offset.reset'='earliest';
CREATE STREAM big_orders WITH (kafka_topic='big_orders') AS
  SELECT id, UCASE(customer) AS customer, qty * price AS total
  FROM orders WHERE qty >= 5 EMIT CHANGES;
SELECT id, customer, total FROM big_orders EMIT CHANGES LIMIT 2;
