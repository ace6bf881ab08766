-- Nexmark's three event streams (see ../../../shared/nexmark.md and `eddy bench nexmark`).
-- Event time is each event's date_time (epoch milliseconds in the JSON records).
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                   date_time TIMESTAMP, extra VARCHAR)
  WITH (KAFKA_TOPIC='nexmark_bid', VALUE_FORMAT='JSON', TIMESTAMP='date_time', PARTITIONS=4);
CREATE STREAM auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
                       reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT,
                       category BIGINT, extra VARCHAR)
  WITH (KAFKA_TOPIC='nexmark_auction', VALUE_FORMAT='JSON', TIMESTAMP='date_time', PARTITIONS=4);
CREATE STREAM person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
                      city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR)
  WITH (KAFKA_TOPIC='nexmark_person', VALUE_FORMAT='JSON', TIMESTAMP='date_time', PARTITIONS=4);
