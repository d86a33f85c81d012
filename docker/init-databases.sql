-- Run once by the postgres image on a new volume: Dagster's storage gets a database of its own,
-- beside the warehouse (POSTGRES_DB).
CREATE DATABASE dagster;
