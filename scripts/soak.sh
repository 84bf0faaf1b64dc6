#!/usr/bin/env bash
# Soak: the real binary under a steady load for minutes, its resident
# memory, heap, goroutines, open descriptors and database connections
# sampled as it goes; prints whether they stayed flat, whether the load was
# held, and whether every acknowledged event is stored.
#
#   bash scripts/soak.sh                                  # 4 minutes, 100 requests/s, PostgreSQL
#   SOAK_DURATION=30m SOAK_RATE=500 bash scripts/soak.sh
#   SOAK_STORE=sqlite bash scripts/soak.sh
#
# How: runs TestSoak (cmd/nself-audit/soak_test.go) without the race
# detector. Its test binary starts a throwaway PostgreSQL (internal/pgtest:
# initdb and pg_ctl on a free loopback port, as the postgres user when run
# as root, removed at the end), builds nself-audit and runs it as a child
# process on a database of that cluster (or on a SQLite file), then sends a
# fixed rate of requests: 70% single writes, 10% batches of 10, 14% list
# pages, 5% stats, 1% chain verification, one in twenty on a fresh
# connection. Samples come from /proc/PID/status (VmRSS), /proc/PID/fd and
# the service's GET /metrics. The suite runs the same test for 15 s.
#
# Environment: SOAK_DURATION (Go duration, default 4m), SOAK_RATE (requests
# per second, default 100), SOAK_STORE (postgres or sqlite). Exit status 0
# when everything was flat, held and stored.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

duration=${SOAK_DURATION:-4m}
rate=${SOAK_RATE:-100}
store=${SOAK_STORE:-postgres}

# seconds DURATION prints the whole seconds of a Go duration such as 1h30m.
seconds() {
	local d=$1 total=0 n unit
	[[ $d =~ ^([0-9]+[hms])+$ ]] || return 1
	while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
		n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
		case $unit in
		h) total=$((total + n * 3600)) ;;
		m) total=$((total + n * 60)) ;;
		s) total=$((total + n)) ;;
		esac
	done
	echo "$total"
}
secs=$(seconds "$duration") || {
	echo "scripts/soak.sh: SOAK_DURATION must be a duration such as 300s, 5m or 1h30m, got '$duration'" >&2
	exit 2
}

echo "soak: $duration at $rate requests/s on $store; machine: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr), $(go version | awk '{print $3}')"
# The test's own lines, without go test's file:line prefix.
NSELF_AUDIT_SOAK_DURATION=$duration NSELF_AUDIT_SOAK_RATE=$rate NSELF_AUDIT_SOAK_STORE=$store \
	go test -count=1 -run '^TestSoak$' -v -timeout "$((secs + 600))s" ./cmd/nself-audit/ 2>&1 |
	grep --line-buffered -vE '^(=== (RUN|PAUSE|CONT)|PASS$)' | sed -uE 's/^ +soak_test\.go:[0-9]+: //'
