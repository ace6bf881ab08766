-- q0 in batch (`eddy bench nexmark --check`): every bid.
SELECT auction, bidder, price, date_time, extra FROM bid;
