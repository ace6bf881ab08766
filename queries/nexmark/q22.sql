-- Nexmark q22, URL directories: string splitting (SPLIT_PART counts pieces from 1; pieces
-- 1 to 3 of https://host/a/b/c are 'https:', '' and the host).
CREATE STREAM q22 AS
  SELECT auction, bidder, price, channel,
         SPLIT_PART(url, '/', 4) AS dir1,
         SPLIT_PART(url, '/', 5) AS dir2,
         SPLIT_PART(url, '/', 6) AS dir3
  FROM bid EMIT CHANGES;
