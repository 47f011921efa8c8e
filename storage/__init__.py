"""PostgreSQL: the table contract (migrations), partitions, and the exactly-once COPY writer."""
