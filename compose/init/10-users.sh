#!/bin/sh
# Creates the orchestrator's admin user, the application user and the application database.
#
# Run once by the mariadb image's entrypoint, on an empty datadir only (docker-entrypoint-initdb.d),
# identically on mariadb1..3. Nothing here goes to the binary log (sql_log_bin = 0): every server
# starts with an empty GTID history, so no server holds transactions the others lack (errant
# GTIDs) and InitShardPrimary can make any of them the primary.
#
# This file is a shell script, not .sql, because the passwords come from the environment. It
# works whether the entrypoint executes it or sources it: the body runs in a subshell, so its
# shell options and functions never leak into the entrypoint.

(
	set -eu

	for name in "${ORC_MYSQL_USER}" "${APP_MYSQL_USER}" "${APP_DATABASE}"; do
		case "${name}" in
		'' | *[!A-Za-z0-9_]*)
			echo "10-users.sh: '${name}' is not a plain name (letters, digits, _)" >&2
			false
			;;
		esac
	done

	# A quoted SQL string: backslashes and single quotes escaped (backslash escapes are on).
	sql_string() {
		printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"
	}

	orc_password=$(sql_string "${ORC_MYSQL_PASSWORD}")
	app_password=$(sql_string "${APP_MYSQL_PASSWORD}")

	MYSQL_PWD="${MARIADB_ROOT_PASSWORD}" mariadb --protocol=socket --user=root <<SQL
SET SESSION sql_log_bin = 0;
SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');

CREATE DATABASE IF NOT EXISTS \`${APP_DATABASE}\`;

-- The orchestrator: reads replication state, fences and unfences writes (read_only), points
-- replicas at a new primary, and writes the reparent journal in _vt on the primary. It is also
-- the replication user (MASTER_USER). MariaDB 10.11 requires READ_ONLY ADMIN to change read_only,
-- and that privilege also lets this user write to a read-only server: only the orchestrator
-- should hold these credentials.
CREATE USER IF NOT EXISTS '${ORC_MYSQL_USER}'@'%' IDENTIFIED BY ${orc_password};
GRANT SUPER, READ_ONLY ADMIN, PROCESS, RELOAD, CONNECTION ADMIN,
      REPLICATION SLAVE, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN,
      SLAVE MONITOR, BINLOG MONITOR, BINLOG ADMIN
   ON *.* TO '${ORC_MYSQL_USER}'@'%';
GRANT ALL PRIVILEGES ON \`_vt\`.* TO '${ORC_MYSQL_USER}'@'%';
-- Migration tasks (the worker service) copy every table they migrate: SELECT on the sources.
GRANT SELECT ON *.* TO '${ORC_MYSQL_USER}'@'%';

-- The application: its own database only, and neither SUPER nor READ_ONLY ADMIN, so a server in
-- read_only refuses its writes (the fence a reparent relies on).
CREATE USER IF NOT EXISTS '${APP_MYSQL_USER}'@'%' IDENTIFIED BY ${app_password};
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, REFERENCES,
      CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW,
      CREATE ROUTINE, ALTER ROUTINE, TRIGGER
   ON \`${APP_DATABASE}\`.* TO '${APP_MYSQL_USER}'@'%';
SQL
)
