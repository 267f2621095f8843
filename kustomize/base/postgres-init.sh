#!/bin/sh
# Runs once, when PostgreSQL initialises its data directory (the image's
# entrypoint runs /docker-entrypoint-initdb.d/*.sh, as the official image
# does). Two roles (docs/security.md, "Audit log"):
#   kleidia      owns the database and schema; the kleidia-migrate Job runs as it
#   kleidia_app  the server's runtime role: LOGIN and nothing else; the
#                grants come from `kleidia migrate`, and it can never alter
#                or truncate the audit log.
# The passwords come from the Secret kleidia-postgres, mounted as files.
# An existing installation creates kleidia_app by hand (README, Kubernetes).
set -eu
owner_password=$(cat "$KLEIDIA_OWNER_PASSWORD_FILE")
app_password=$(cat "$KLEIDIA_APP_PASSWORD_FILE")
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set owner_password="$owner_password" \
  --set app_password="$app_password" <<'SQL'
CREATE ROLE kleidia LOGIN PASSWORD :'owner_password';
CREATE ROLE kleidia_app LOGIN PASSWORD :'app_password';
ALTER DATABASE kleidia OWNER TO kleidia;
REVOKE ALL ON DATABASE kleidia FROM PUBLIC;
GRANT CONNECT ON DATABASE kleidia TO kleidia_app;
SQL
