#!/bin/sh
# Runs once, when PostgreSQL initialises its data directory. Two roles
# (docs/security.md, "Audit log"):
#   kleidia      owns the database and schema; `kleidia migrate` runs as it
#   kleidia_app  the server's runtime role: LOGIN and nothing else; the
#                grants come from `kleidia migrate`, and it can never alter
#                or truncate the audit log.
# An existing installation creates kleidia_app by hand (README, Kubernetes).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set owner_password="$KLEIDIA_OWNER_PASSWORD" \
  --set app_password="$KLEIDIA_APP_PASSWORD" <<'SQL'
CREATE ROLE kleidia LOGIN PASSWORD :'owner_password';
CREATE ROLE kleidia_app LOGIN PASSWORD :'app_password';
ALTER DATABASE kleidia OWNER TO kleidia;
REVOKE ALL ON DATABASE kleidia FROM PUBLIC;
GRANT CONNECT ON DATABASE kleidia TO kleidia_app;
SQL
