#!/bin/sh
# The migration target's only user: the orchestrator's account (ORC_MYSQL_USER), which the
# worker writes with. Run once by the mariadb image's entrypoint, on an empty datadir only.
# Nothing here goes to the binary log (sql_log_bin = 0).

(
	set -eu

	case "${ORC_MYSQL_USER}" in
	'' | *[!A-Za-z0-9_]*)
		echo "10-users.sh: '${ORC_MYSQL_USER}' is not a plain name (letters, digits, _)" >&2
		false
		;;
	esac

	orc_password=$(printf "'%s'" "$(printf '%s' "${ORC_MYSQL_PASSWORD}" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")")

	MYSQL_PWD="${MARIADB_ROOT_PASSWORD}" mariadb --protocol=socket --user=root <<SQL
SET SESSION sql_log_bin = 0;
SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');

-- What a task needs downstream: create the routed schemas and tables (and meta-schema
-- dm_meta with its checkpoint tables), write rows, apply the DDL the sources replay.
CREATE USER IF NOT EXISTS '${ORC_MYSQL_USER}'@'%' IDENTIFIED BY ${orc_password};
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX ON *.* TO '${ORC_MYSQL_USER}'@'%';
SQL
)
