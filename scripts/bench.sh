#!/usr/bin/env bash
# The issue-5 benchmark: raw PostgreSQL 15 inserts and nself-audit, side by
# side, in one run, on one throwaway cluster with default settings.
#
#   bash scripts/bench.sh
#
# 1. starts a throwaway PostgreSQL (initdb + pg_ctl, as the postgres user
#    when run as root; default settings except a free loopback port and a
#    socket folder in the temp folder), all removed at exit;
# 2. creates an audit-shaped table (uuid key, the service's columns, the
#    four query indexes) and measures pgbench single-row INSERTs from 1
#    client and 1000-row INSERT batches from 1 client;
# 3. builds nself-audit and starts it on its own database of the same
#    cluster;
# 4. runs BENCH_ROUNDS rounds, each one the comparisons issue 5 asks for,
#    back to back: pgbench single-row INSERTs from 8 clients, then
#    `nself-audit bench` in single mode (64 clients), then the INSERTs
#    again; COPY of BENCH_COPY_ROWS rows from a CSV file, then batch mode
#    (1000-event batches), then the COPY again. The machine's speed drifts
#    by a sixth within minutes here, so each ratio is taken within a
#    round, against the mean of the raw phases just before and after;
# 5. prints every round's rates and ratios, and the median ratios.
#
# Environment (all optional):
#   BENCH_SECONDS=10            seconds of each timed phase
#   BENCH_ROUNDS=3              rounds of the side-by-side comparisons
#   BENCH_COPY_ROWS=200000      rows of the raw COPY
#   BENCH_CONCURRENCY=64        clients of the service's single-event run
#   BENCH_BATCH_CONCURRENCY=8   clients of the service's batch run
#   BENCH_QUERY_EVENTS=N        also load N events with batch mode into one
#                               account, then run query mode (8 clients)
#                               and stats mode (1 client); off by default
#   BENCH_GROWTH="1000000 10000000"
#                               after the above, grow acct-0 (batch mode) to
#                               each size in turn and measure there: single
#                               and batch ingest, queries and stats; at the
#                               last size also export and verify the whole
#                               account, sampling the service's resident
#                               size. Prints the cost-of-growth table. Off
#                               by default; 10M events take about 15 GB of
#                               disk and most of an hour here.
#   BENCH_KEEP=1                keep the temp folder (logs, CSV) at exit
#
# A default run takes about three minutes here. No result is asserted: it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_COPY_ROWS=${BENCH_COPY_ROWS:-200000}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-64}
BENCH_BATCH_CONCURRENCY=${BENCH_BATCH_CONCURRENCY:-8}
BENCH_QUERY_EVENTS=${BENCH_QUERY_EVENTS:-0}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_GROWTH=${BENCH_GROWTH:-}
for size in $BENCH_GROWTH; do
	[[ $size =~ ^[0-9]+$ ]] || { echo "scripts/bench.sh: BENCH_GROWTH must list whole numbers, got '$size'" >&2; exit 2; }
done
for v in BENCH_SECONDS BENCH_ROUNDS BENCH_COPY_ROWS BENCH_CONCURRENCY BENCH_BATCH_CONCURRENCY BENCH_QUERY_EVENTS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
		echo "scripts/bench.sh: $v must be a whole number, got '${!v}'" >&2
		exit 2
	fi
done
if ((BENCH_SECONDS < 1 || BENCH_SECONDS > 600)); then
	echo "scripts/bench.sh: BENCH_SECONDS must be from 1 to 600" >&2
	exit 2
fi
if ((BENCH_ROUNDS < 1 || BENCH_ROUNDS > 20)); then
	echo "scripts/bench.sh: BENCH_ROUNDS must be from 1 to 20" >&2
	exit 2
fi

log() { printf '+ %s\n' "$*" >&2; }
die() {
	echo "scripts/bench.sh: $*" >&2
	exit 1
}

# --- PostgreSQL binaries (as internal/pgtest finds them) --------------------
bindir=""
if command -v pg_config >/dev/null 2>&1; then
	bindir=$(pg_config --bindir 2>/dev/null || true)
fi
if [[ -z $bindir || ! -x $bindir/initdb ]]; then
	bindir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)
fi
[[ -n $bindir && -x $bindir/initdb && -x $bindir/pgbench ]] ||
	die "no PostgreSQL server binaries with pgbench; as root: apt-get install -y postgresql-15"
pgversion=$("$bindir/postgres" --version | awk '{print $3}')

# --- temp folder and cleanup --------------------------------------------------
tmp=$(mktemp -d /tmp/nself-audit-bench.XXXXXX)
chmod 755 "$tmp"
data=$tmp/data
sock=$tmp/sock
svc_pid=""
child="" # the long step running now (see wait_for)
pg_started=0

as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $child ]]; then
		kill -TERM "$child" 2>/dev/null || true # timeout(1) passes it on
		wait "$child" 2>/dev/null || true
	fi
	if [[ -n $svc_pid ]] && kill -0 "$svc_pid" 2>/dev/null; then
		kill -TERM "$svc_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$svc_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$svc_pid" 2>/dev/null || true
	fi
	if ((pg_started)); then
		as_pg "$bindir/pg_ctl" -D "$data" stop -m fast -w -t 30 >/dev/null 2>&1 ||
			as_pg "$bindir/pg_ctl" -D "$data" stop -m immediate -w -t 10 >/dev/null 2>&1 || true
	fi
	if [[ $BENCH_KEEP == 1 ]]; then
		echo "scripts/bench.sh: kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for CMD... runs a long step as a child and waits for it, so that an
# INT or TERM stops it at once (bash runs traps only between commands, but
# `wait` returns when a signal arrives). Not for commands reading stdin.
wait_for() {
	local rc=0
	"$@" &
	child=$!
	wait "$child" || rc=$?
	child=""
	return "$rc"
}

# free_port prints a loopback port nothing listens on.
free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "found no free loopback port"
}

# --- throwaway cluster ----------------------------------------------------------
mkdir -m 700 "$data"
mkdir -m 755 "$sock"
if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run the server as"
	chown postgres: "$data" "$sock"
fi
log "initdb ($bindir, PostgreSQL $pgversion)"
if ! (cd "$tmp" && as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$tmp/initdb.log" 2>&1); then
	rm -rf "${data:?}"/* # C.UTF-8 may be missing: fall back to C
	(cd "$tmp" && as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1) ||
		{ tail -n 20 "$tmp/initdb.log" >&2; die "initdb failed"; }
fi
pgport=""
for attempt in 1 2 3; do
	port=$(free_port)
	if (cd "$tmp" && as_pg "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$sock") >/dev/null 2>&1; then
		pgport=$port
		pg_started=1
		break
	fi
	log "pg_ctl start on port $port failed (attempt $attempt)"
	as_pg "$bindir/pg_ctl" -D "$data" stop -m immediate -w -t 10 >/dev/null 2>&1 || true
done
[[ -n $pgport ]] || { tail -n 20 "$data/server.log" >&2 || true; die "could not start PostgreSQL"; }
log "PostgreSQL $pgversion on 127.0.0.1:$pgport (default settings), data in $data"

export PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres
unset PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
psql_cmd=(timeout 600 "$bindir/psql" -X -q -v ON_ERROR_STOP=1)
psql_() { "${psql_cmd[@]}" "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench_raw"

# --- the raw baseline -------------------------------------------------------------
# The service's columns (migrations/0001_events.sql), a uuid key and the
# four query indexes; not partitioned, no triggers, no row-level security,
# no chain. Ids are time-ordered like the service's UUIDv7.
psql_ -d bench_raw <<'SQL'
CREATE SEQUENCE raw_seq;
CREATE FUNCTION uuid7ish() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
          || '7' || substr(md5(random()::text), 1, 19))::uuid
$$;
CREATE FUNCTION hex64() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT md5(random()::text) || md5(random()::text)
$$;
CREATE TABLE raw_events (
    id                uuid        NOT NULL PRIMARY KEY,
    source_account_id text        COLLATE "C" NOT NULL,
    seq               bigint      NOT NULL,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    actor_id          text        COLLATE "C" NOT NULL,
    actor_type        text        COLLATE "C" NOT NULL,
    action            text        COLLATE "C" NOT NULL,
    resource_type     text        COLLATE "C" NOT NULL,
    resource_id       text        COLLATE "C" NOT NULL,
    outcome           text        COLLATE "C" NOT NULL,
    severity          text        COLLATE "C" NOT NULL,
    ip_address        text        COLLATE "C" NOT NULL,
    user_agent        text        NOT NULL,
    request_id        text        COLLATE "C" NOT NULL,
    source            text        COLLATE "C" NOT NULL,
    metadata          json        NOT NULL,
    prev_hash         text        NOT NULL,
    hash              text        NOT NULL
);
CREATE INDEX raw_events_account_time ON raw_events (source_account_id, occurred_at DESC, id DESC);
CREATE INDEX raw_events_actor ON raw_events (source_account_id, actor_id, occurred_at DESC, id DESC);
CREATE INDEX raw_events_action ON raw_events (source_account_id, action, occurred_at DESC, id DESC);
CREATE INDEX raw_events_resource ON raw_events (source_account_id, resource_type, resource_id, occurred_at DESC, id DESC);
SQL

# One row's values, as SQL, for pgbench: :a actor, :act action, :r resource.
cat >"$tmp/insert1.sql" <<'SQL'
\set a random(0, 999)
\set act random(1, 30)
\set r random(0, 9999)
\set ip random(1, 254)
INSERT INTO raw_events VALUES (uuid7ish(), 'acct-0', nextval('raw_seq'), now(), now(), 'user-' || :a, 'user',
  (ARRAY['user.login','user.logout','user.login_failed','user.password_changed','user.mfa_enabled','user.created',
         'user.deleted','doc.read','doc.created','doc.updated','doc.deleted','doc.shared','doc.exported',
         'project.created','project.archived','project.member_added','project.member_removed','billing.invoice_paid',
         'billing.invoice_failed','billing.plan_changed','api_key.created','api_key.revoked','api_key.used',
         'file.uploaded','file.downloaded','file.deleted','settings.updated','settings.sso_configured',
         'admin.impersonation_started','admin.role_granted'])[:act],
  (ARRAY['doc','project','invoice','api_key','file','user'])[:r % 6 + 1], 'res-' || :r, 'success', 'info',
  '10.0.0.' || :ip, 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
  'req-' || :a || '-' || :r, 'bench',
  '{"attempt": 1, "mfa": true, "session": "s-4f2a9c11"}', hex64(), hex64()); -- no ":name" here: pgbench would read a variable
SQL

# One statement inserting 1000 rows of literal values (ids, seqs and
# hashes from the server), as a client batching rows would send it. (No
# ":name" in the text: pgbench would read it as a variable.)
awk -v n=1000 'BEGIN {
	srand(42)
	split("user.login user.logout user.login_failed doc.read doc.created doc.updated doc.shared project.created billing.invoice_paid api_key.used file.uploaded settings.updated admin.role_granted", acts, " ")
	split("doc project invoice api_key file user", types, " ")
	print "INSERT INTO raw_events VALUES"
	for (i = 1; i <= n; i++) {
		r = int(rand() * 10000); a = int(rand() * 1000)
		printf "(uuid7ish(), '\''acct-0'\'', nextval('\''raw_seq'\''), now(), now(), '\''user-%d'\'', '\''user'\'', '\''%s'\'', '\''%s'\'', '\''res-%d'\'', '\''success'\'', '\''info'\'', '\''10.0.%d.%d'\'', '\''Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0'\'', '\''req-%d'\'', '\''bench'\'', '\''{\"attempt\": 1, \"mfa\": true, \"session\": \"s-%x\"}'\'', hex64(), hex64())%s\n",
			a, acts[int(rand() * 13) + 1], types[r % 6 + 1], r, int(rand() * 256), int(rand() * 254) + 1, i, int(rand() * 2^31), (i < n ? "," : ";")
	}
}' >"$tmp/insert1000.sql"

# fresh empties the raw table and checkpoints, so every phase starts alike.
fresh() { psql_ -d bench_raw -c "TRUNCATE raw_events" -c "CHECKPOINT"; }

# pgbench_tps FILE CLIENTS VAR sets VAR to the transactions per second.
pgbench_tps() {
	local out=$tmp/pgbench-$(basename "$1" .sql)-c$2.log
	wait_for timeout $((BENCH_SECONDS + 120)) "$bindir/pgbench" -n -M prepared -f "$1" -c "$2" -j "$(($2 < 2 ? $2 : 2))" \
		-T "$BENCH_SECONDS" bench_raw >"$out" 2>&1 || { tail -n 15 "$out" | cut -c 1-300 >&2; die "pgbench $1 -c $2 failed"; }
	printf -v "$3" '%s' "$(awk '/^tps = / {print $3; exit}' "$out")"
	[[ -n ${!3} ]] || die "pgbench $1 -c $2 printed no tps (see $out)"
}

fresh
log "raw: pgbench single-row INSERT, 1 client, ${BENCH_SECONDS}s"
pgbench_tps "$tmp/insert1.sql" 1 raw_ins1
fresh
log "raw: pgbench 1000-row INSERT statements, 1 client, ${BENCH_SECONDS}s"
pgbench_tps "$tmp/insert1000.sql" 1 raw_batch_tps
raw_batch=$(awk -v t="$raw_batch_tps" 'BEGIN {printf "%.1f", t * 1000}')

log "raw: generating $BENCH_COPY_ROWS rows of CSV"
copy_out="\\copy (SELECT uuid7ish(), 'acct-0', g, now(), now(), 'user-' || (g % 1000), 'user',
	(ARRAY['user.login','doc.read','doc.updated','project.created','billing.invoice_paid','api_key.used','file.uploaded','settings.updated'])[g % 8 + 1],
	(ARRAY['doc','project','invoice','api_key','file','user'])[g % 6 + 1], 'res-' || (g * 7919 % 10000), 'success', 'info',
	'10.0.' || (g % 256) || '.' || (g % 254 + 1), 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', 'req-' || g, 'bench',
	json_build_object('attempt', 1, 'mfa', g % 3 <> 0, 'session', 's-' || md5(g::text))::text, hex64(), hex64()
	FROM generate_series(1, $BENCH_COPY_ROWS) g) TO '$tmp/rows.csv' WITH (FORMAT csv)"
# A backslash command ends at the end of its line.
wait_for "${psql_cmd[@]}" -d bench_raw -c "$(printf '%s' "$copy_out" | tr '\n\t' '  ')"

# raw_copy VAR copies the CSV into the empty raw table and sets VAR to the
# rows per second.
raw_copy() {
	fresh
	local t0 t1 copied
	t0=$(date +%s%N)
	wait_for "${psql_cmd[@]}" -d bench_raw -c "\\copy raw_events FROM '$tmp/rows.csv' WITH (FORMAT csv)"
	t1=$(date +%s%N)
	copied=$(psql_ -d bench_raw -At -c "SELECT count(*) FROM raw_events")
	[[ $copied == "$BENCH_COPY_ROWS" ]] || die "COPY stored $copied rows, want $BENCH_COPY_ROWS"
	printf -v "$1" '%s' "$(awk -v n="$BENCH_COPY_ROWS" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / ((b - a) / 1e9)}')"
	fresh
}

# --- the service ------------------------------------------------------------------
log "go build ./cmd/nself-audit"
wait_for timeout 600 go -C "$repo" build -o "$tmp/nself-audit" ./cmd/nself-audit
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
svcport=$(free_port)
# start_service starts nself-audit on a new, empty database nself_audit (and
# data folder), as the raw phases start on an empty table.
start_service() {
	psql_ -d postgres -c "DROP DATABASE IF EXISTS nself_audit" -c "CREATE DATABASE nself_audit"
	rm -rf "$tmp/svc-data"
	mkdir -m 700 "$tmp/svc-data"
	log "starting nself-audit on 127.0.0.1:$svcport, database nself_audit"
	env -i PATH="$PATH" HOME="$tmp" \
		DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/nself_audit?sslmode=disable" \
		PLUGIN_INTERNAL_SECRET="$secret" NSELF_AUDIT_DATA_DIR="$tmp/svc-data" \
		HOST=127.0.0.1 PORT="$svcport" LOG_LEVEL=warn \
		"$tmp/nself-audit" serve >"$tmp/service.log" 2>&1 &
	svc_pid=$!
	ready=0
	for _ in $(seq 1 300); do
		if ! kill -0 "$svc_pid" 2>/dev/null; then
			tail -n 20 "$tmp/service.log" >&2
			die "nself-audit exited at start"
		fi
		if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$svcport/ready" 2>/dev/null; then
			ready=1
			break
		fi
		sleep 0.2
	done
	((ready)) || { tail -n 20 "$tmp/service.log" >&2; die "nself-audit was not ready within 60 s"; }
}
# stop_service stops it and waits for it to exit.
stop_service() {
	kill -TERM "$svc_pid" 2>/dev/null || true
	wait "$svc_pid" 2>/dev/null || true
	svc_pid=""
}

# bench MODE ARGS... runs `nself-audit bench` against the service; the JSON
# summary goes to $tmp/bench-MODE.json. It is killed after bench_timeout s.
bench_timeout=$((BENCH_SECONDS * 4 + 300))
bench() {
	local mode=$1
	shift
	PLUGIN_INTERNAL_SECRET=$secret wait_for timeout "$bench_timeout" "$tmp/nself-audit" bench \
		--url "http://127.0.0.1:$svcport" --mode "$mode" --json "$@" >"$tmp/bench-$mode.json" ||
		{ cat "$tmp/bench-$mode.json" >&2; die "nself-audit bench --mode $mode failed"; }
}
# field FILE NAME prints the first "NAME": value of a summary.
field() { sed -n "s/^ *\"$2\": \\([0-9.]*\\),\\{0,1\\}\$/\\1/p" "$1" | head -n 1; }

# --- the side-by-side rounds -------------------------------------------------------
# Each round: raw 8-client INSERTs, the service's single POSTs, the raw
# INSERTs again; raw COPY, the service's batches, the raw COPY again. Every
# phase starts after a checkpoint; each round's service starts on an empty
# database, as each raw phase on an empty table. The last round's service
# stays up for the phases after.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
num() { awk -v x="$1" 'BEGIN {printf "%.0f", x}'; }
mean() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (a + b) / 2}'; }
round_rows=()
r_singles=()
r_batches=()
single_p99s=()
svc_single_err=0
svc_batch_err=0
rss_peak_kb=0
for round in $(seq 1 "$BENCH_ROUNDS"); do
	start_service
	fresh
	log "round $round: raw: pgbench single-row INSERT, 8 clients, ${BENCH_SECONDS}s"
	pgbench_tps "$tmp/insert1.sql" 8 raw_ins8_before
	fresh
	log "round $round: service: nself-audit bench --mode single --concurrency $BENCH_CONCURRENCY --duration ${BENCH_SECONDS}s"
	bench single --concurrency "$BENCH_CONCURRENCY" --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-single.json" "$tmp/bench-single-$round.json"
	svc_single=$(field "$tmp/bench-single-$round.json" events_per_s)
	svc_single_p99=$(field "$tmp/bench-single-$round.json" p99)
	svc_single_err=$((svc_single_err + $(field "$tmp/bench-single-$round.json" errors)))
	fresh
	log "round $round: raw: pgbench single-row INSERT, 8 clients, ${BENCH_SECONDS}s, again"
	pgbench_tps "$tmp/insert1.sql" 8 raw_ins8_after
	log "round $round: raw: COPY $BENCH_COPY_ROWS rows"
	raw_copy raw_copy_before
	log "round $round: service: nself-audit bench --mode batch --batch-size 1000 --concurrency $BENCH_BATCH_CONCURRENCY --duration ${BENCH_SECONDS}s"
	bench batch --batch-size 1000 --concurrency "$BENCH_BATCH_CONCURRENCY" --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-batch.json" "$tmp/bench-batch-$round.json"
	svc_batch=$(field "$tmp/bench-batch-$round.json" events_per_s)
	svc_batch_p99=$(field "$tmp/bench-batch-$round.json" p99)
	svc_batch_err=$((svc_batch_err + $(field "$tmp/bench-batch-$round.json" errors)))
	log "round $round: raw: COPY $BENCH_COPY_ROWS rows, again"
	raw_copy raw_copy_after
	# Each service phase is measured against the mean of the raw phases
	# just before and just after it, so that a drift of the machine's
	# speed across the three weighs on both sides alike.
	raw_ins8=$(mean "$raw_ins8_before" "$raw_ins8_after")
	raw_copy_rate=$(mean "$raw_copy_before" "$raw_copy_after")
	r_singles+=("$(ratio "$svc_single" "$raw_ins8")")
	r_batches+=("$(ratio "$svc_batch" "$raw_copy_rate")")
	single_p99s+=("$svc_single_p99")
	round_rows+=("$(printf '%5s %16s %10s %8s %6s %16s %10s %8s %6s' "$round" \
		"$(num "$raw_ins8_before")/$(num "$raw_ins8_after")" "$(num "$svc_single")" "$svc_single_p99" "${r_singles[-1]}" \
		"$(num "$raw_copy_before")/$(num "$raw_copy_after")" "$(num "$svc_batch")" "$svc_batch_p99" "${r_batches[-1]}")")
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$svc_pid/status" 2>/dev/null || echo 0)
	if ((hwm > rss_peak_kb)); then
		rss_peak_kb=$hwm
	fi
	if ((round < BENCH_ROUNDS)); then
		stop_service
	fi
done

if ((BENCH_QUERY_EVENTS > 0)); then
	log "service: loading $BENCH_QUERY_EVENTS events into acct-0 (batch mode)"
	# Bounded as if at least 500 events/s were stored.
	load_seconds=$((BENCH_QUERY_EVENTS / 500 + 300))
	bench_timeout=$((load_seconds + 300)) bench batch --batch-size 1000 --concurrency "$BENCH_BATCH_CONCURRENCY" \
		--max-events "$BENCH_QUERY_EVENTS" --duration "${load_seconds}s"
	mv "$tmp/bench-batch.json" "$tmp/bench-load.json"
	log "service: VACUUM ANALYZE"
	psql_ -d nself_audit -c "VACUUM ANALYZE"
	log "service: nself-audit bench --mode query --concurrency 8 --duration ${BENCH_SECONDS}s"
	bench query --concurrency 8 --duration "${BENCH_SECONDS}s"
	log "service: nself-audit bench --mode stats --concurrency 1 --duration ${BENCH_SECONDS}s"
	bench stats --concurrency 1 --duration "${BENCH_SECONDS}s"
fi

# --- cost of growth ------------------------------------------------------------------
# qfield FILE QUERY STAT prints one latency figure of a query-mode summary.
qfield() {
	sed -n "/\"$2\": {/,/}/p" "$1" | sed -n "s/^ *\"$3\": \([0-9.]*\),\{0,1\}\$/\\1/p" | head -n 1
}
# rss_sample PID OUT samples VmRSS (kB) every 0.2 s into OUT until killed.
rss_sample() {
	while kill -0 "$1" 2>/dev/null; do
		awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null >>"$2" || true
		sleep 0.2
	done
}
acct_events() { psql_ -d nself_audit -At -c "SELECT count(*) FROM np_nself_audit.np_audit_events WHERE source_account_id = 'acct-0'"; }
growth_rows=()
growth_last=""
for size in $BENCH_GROWTH; do
	have=$(acct_events)
	if ((have < size)); then
		log "growth: loading $((size - have)) events into acct-0 (now $have, batch mode)"
		load_seconds=$(((size - have) / 500 + 300))
		bench_timeout=$((load_seconds + 300)) bench batch --batch-size 1000 --concurrency "$BENCH_BATCH_CONCURRENCY" \
			--max-events "$((size - have))" --duration "${load_seconds}s"
		mv "$tmp/bench-batch.json" "$tmp/bench-growth-load-$size.json"
	fi
	log "growth: VACUUM ANALYZE at $size"
	psql_ -d nself_audit -c "VACUUM ANALYZE"
	psql_ -d nself_audit -c "CHECKPOINT"
	log "growth: measuring at $size events"
	bench single --concurrency "$BENCH_CONCURRENCY" --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-single.json" "$tmp/bench-growth-single-$size.json"
	bench batch --batch-size 1000 --concurrency "$BENCH_BATCH_CONCURRENCY" --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-batch.json" "$tmp/bench-growth-batch-$size.json"
	bench query --concurrency 8 --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-query.json" "$tmp/bench-growth-query-$size.json"
	bench stats --concurrency 1 --duration "${BENCH_SECONDS}s"
	mv "$tmp/bench-stats.json" "$tmp/bench-growth-stats-$size.json"
	q=$tmp/bench-growth-query-$size.json
	row=$(printf '%-12s %9s %9s %9s %9s %9s %9s %9s %9s' "$(acct_events)" \
		"$(num "$(field "$tmp/bench-growth-single-$size.json" events_per_s)")" \
		"$(num "$(field "$tmp/bench-growth-batch-$size.json" events_per_s)")" \
		"$(qfield "$q" newest_50 p99)" "$(qfield "$q" actor p99)" "$(qfield "$q" action_prefix_time_range p99)" \
		"$(qfield "$q" resource p99)" "$(qfield "$q" deep_cursor_page p99)" "$(field "$tmp/bench-growth-stats-$size.json" p99)")
	growth_rows+=("$row")
	growth_last=$size
done
if [[ -n $growth_last ]]; then
	# Whole-account export and verify at the largest size, with the
	# service's resident size sampled throughout: constant memory means the
	# peak does not grow with the account.
	for what in export verify; do
		path=/api/v1/events/export
		[[ $what == verify ]] && path=/api/v1/verify
		: >"$tmp/rss-$what.txt"
		rss_sample "$svc_pid" "$tmp/rss-$what.txt" &
		sampler=$!
		t0=$(date +%s%N)
		curl -fsS --max-time 3600 -H "Authorization: Bearer $secret" -H "X-Source-Account-Id: acct-0" \
			"http://127.0.0.1:$svcport$path" -o "$tmp/$what.out" || die "$what failed"
		t1=$(date +%s%N)
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		printf -v "${what}_seconds" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e9}')"
		printf -v "${what}_rss_mib" '%s' "$(sort -n "$tmp/rss-$what.txt" | tail -n 1 | awk '{printf "%.0f", $1 / 1024}')"
	done
	export_lines=$(wc -l <"$tmp/export.out")
	export_mib=$(($(stat -c %s "$tmp/export.out") / 1048576))
	verify_answer=$(head -c 300 "$tmp/verify.out")
	rm -f "$tmp/export.out"
fi

# --- report -----------------------------------------------------------------------
verdict() { awk -v r="$1" -v t="$2" 'BEGIN {print (r + 0 >= t + 0) ? "met" : "NOT met"}'; }
# median X... prints the middle value (the mean of the middle two for an
# even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
r_single=$(median "${r_singles[@]}")
r_batch=$(median "${r_batches[@]}")
max_p99=$(printf '%s\n' "${single_p99s[@]}" | sort -g | tail -n 1)
p99_ok=$(awk -v p="$max_p99" 'BEGIN {print (p + 0 <= 50) ? "met" : "NOT met"}')

echo
echo "nself-audit vs raw PostgreSQL $pgversion, one cluster (default settings), one run"
echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr), $(go version | awk '{print $3}')"
echo "phases of ${BENCH_SECONDS}s; COPY of $BENCH_COPY_ROWS rows; $BENCH_ROUNDS rounds"
echo
printf '%-58s %12s\n' "once, before the rounds" "rows/s"
printf '%-58s %12s\n' "raw single-row INSERT, 1 client (pgbench -M prepared)" "$(num "$raw_ins1")"
printf '%-58s %12s\n' "raw 1000-row INSERT statements, 1 client" "$(num "$raw_batch")"
echo
echo "each round, rows/s: raw single-row INSERT, 8 clients (pgbench -M prepared), before/after the service's"
echo "POST /api/v1/events, $BENCH_CONCURRENCY clients; raw COPY, before/after POST /api/v1/events/batch (1000),"
echo "$BENCH_BATCH_CONCURRENCY clients. Each ratio is the service's rate over the mean of the raw rates before and after it."
printf '%5s %16s %10s %8s %6s %16s %10s %8s %6s\n' "round" "INSERT x8 b/a" "single" "p99 ms" "ratio" "COPY b/a" "batch" "p99 ms" "ratio"
for row in "${round_rows[@]}"; do
	echo "$row"
done
echo
echo "single: service / raw 8-client INSERT = $r_single, the median of ${r_singles[*]}   (target >= 1.1: $(verdict "$r_single" 1.1); p99 <= 50 ms in every round: $p99_ok)"
echo "batch:  service batch / raw COPY      = $r_batch, the median of ${r_batches[*]}   (target >= 0.8: $(verdict "$r_batch" 0.8))"
echo "errors: single $svc_single_err, batch $svc_batch_err"
if ((rss_peak_kb > 0)); then
	echo "service peak resident size (VmHWM) after the ingest runs: $((rss_peak_kb / 1024)) MiB (target <= 150 MB)"
fi
if ((BENCH_QUERY_EVENTS > 0)); then
	total=$(psql_ -d nself_audit -At -c "SELECT count(*) FROM np_nself_audit.np_audit_events WHERE source_account_id = 'acct-0'")
	echo
	echo "loaded $BENCH_QUERY_EVENTS events with batch mode at $(num "$(field "$tmp/bench-load.json" events_per_s)") events/s"
	echo "queries over acct-0 holding $(num "$total") events, 8 clients (target p99 <= 15 ms each):"
	sed -n '/"queries"/,$p' "$tmp/bench-query.json" | awk '
		/^    "[a-z_0-9]*": \{/ {k = $1; gsub(/[":]/, "", k)}
		/"p50"/ {p50 = $2} /"p90"/ {p90 = $2} /"p99"/ {p99 = $2}
		/"max"/ {gsub(/,/, "", p50); gsub(/,/, "", p90); gsub(/,/, "", p99); printf "  %-26s p50 %8s  p90 %8s  p99 %8s  max %8s ms\n", k, p50, p90, p99, $2}'
	echo "stats over the whole account, 1 client: p50 $(field "$tmp/bench-stats.json" p50) ms, p99 $(field "$tmp/bench-stats.json" p99) ms (target <= 250 ms)"
fi
if [[ -n $growth_last ]]; then
	echo
	echo "cost of growth: acct-0 grown with batch mode; at each size: ingest ${BENCH_SECONDS}s each, queries 8 clients, p99 ms"
	printf '%-12s %9s %9s %9s %9s %9s %9s %9s %9s\n' "events" "single/s" "batch/s" "newest" "actor" "prefix" "resource" "deep" "stats"
	for row in "${growth_rows[@]}"; do
		echo "$row"
	done
	echo "export of acct-0 ($export_lines events, $export_mib MiB NDJSON): ${export_seconds} s, service resident size peak ${export_rss_mib} MiB"
	echo "verify of acct-0: ${verify_seconds} s, service resident size peak ${verify_rss_mib} MiB; answer: $verify_answer"
fi
