-- The banks' databases, made once when bank-db starts on an empty data directory (the
-- postgres image runs /docker-entrypoint-initdb.d/*.sql). Each bank makes its own tables.
CREATE DATABASE bank_a;
CREATE DATABASE bank_b;
