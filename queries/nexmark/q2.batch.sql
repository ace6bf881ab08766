-- q2 in batch (`eddy bench nexmark --check`).
SELECT auction, price FROM bid WHERE auction % 123 = 0;
