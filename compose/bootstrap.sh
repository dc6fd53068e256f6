#!/bin/sh
# One-shot bootstrap of the compose stack: registers keyspace commerce, shard commerce/0 and one
# replica tablet per MariaDB service, then makes zone1-101 (mariadb1) the primary with
# InitShardPrimary. Run by the `bootstrap` service after the orchestrator is healthy.
#
# Safe to run again (`docker compose up` starts it on every up): a shard that already has a
# primary is left alone, and a create that fails because the record exists is accepted.
set -eu

SERVER="${ORC_SERVER:-http://orchestrator:8080}"

ctl() {
	orchestrator ctl --server "${SERVER}" "$@"
}

# Run a create command; if it fails, accept it only when the record can be read back (it was
# created by an earlier run). Anything else fails the bootstrap.
ensure() {
	get="$1"
	shift
	if ! ctl "$@"; then
		echo "bootstrap: '$*' failed; checking whether it already exists" >&2
		ctl ${get} >/dev/null
	fi
}

shard_has_primary() {
	ctl GetShard commerce/0 2>/dev/null | python3 -c '
import json, sys

def primary(node):
    if isinstance(node, dict):
        if node.get("primary_alias"):
            return True
        return any(primary(v) for v in node.values())
    return False

sys.exit(0 if primary(json.load(sys.stdin)) else 1)
'
}

if shard_has_primary; then
	echo "bootstrap: commerce/0 already has a primary; nothing to do" >&2
	exit 0
fi

ensure "GetKeyspace commerce" CreateKeyspace commerce
ensure "GetShard commerce/0" CreateShard commerce/0

ensure "GetTablet zone1-101" AddTablet zone1-101 commerce/0 --mysql-host mariadb1 --mysql-port 3306 --type replica
ensure "GetTablet zone1-102" AddTablet zone1-102 commerce/0 --mysql-host mariadb2 --mysql-port 3306 --type replica
ensure "GetTablet zone1-103" AddTablet zone1-103 commerce/0 --mysql-host mariadb3 --mysql-port 3306 --type replica

ctl InitShardPrimary commerce/0 --primary zone1-101
echo "bootstrap: commerce/0 is serving with primary zone1-101" >&2
