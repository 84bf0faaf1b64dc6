#!/usr/bin/env bash
# The project's one test command: go vet + go test -race over the module.
# Installs what the tests need when it is missing and this runs as root: the
# PostgreSQL server (internal/pgtest), gcc (-race) and Chromium (the viewer's
# browser test); otherwise says what to install.
#
#   bash scripts/test.sh                    # go test ... ./...
#   bash scripts/test.sh ./internal/pgtest/ -run TestX -v   # args replace ./...
set -euo pipefail
cd "$(dirname "$0")/.."

# Same lookup as internal/pgtest: `pg_config --bindir` with initdb in it, else
# /usr/lib/postgresql/*/bin/initdb.
have_pg_server() {
	local bindir
	if command -v pg_config >/dev/null 2>&1; then
		bindir=$(pg_config --bindir 2>/dev/null || true)
		if [[ -n $bindir && -x $bindir/initdb ]]; then
			return 0
		fi
	fi
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
# A running server named by NSELF_AUDIT_TEST_DATABASE_URL needs no binaries.
if [[ -z ${NSELF_AUDIT_TEST_DATABASE_URL:-} ]]; then
	have_pg_server || missing+=(postgresql)
fi
# -race needs cgo, hence a C compiler.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# The viewer's browser test (cmd/nself-audit/viewer_test.go) drives Debian's
# chromium; only outside CI may NSELF_AUDIT_SKIP_BROWSER=1 do without it.
if [[ -z ${NSELF_AUDIT_CHROMIUM:-} ]] && ! command -v chromium >/dev/null 2>&1 &&
	! [[ ${NSELF_AUDIT_SKIP_BROWSER:-} == 1 && -z ${CI:-} ]]; then
	missing+=(chromium)
fi

if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "scripts/test.sh: missing: ${missing[*]} (PostgreSQL server binaries / C compiler for -race / Chromium for the viewer's test)." >&2
		echo "Install as root: apt-get update && apt-get install -y --no-install-recommends postgresql-15 gcc libc6-dev chromium" >&2
		echo "(package 'postgresql' if postgresql-15 is unavailable), or set NSELF_AUDIT_TEST_DATABASE_URL to a running server's superuser URL." >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "scripts/test.sh: installing ${missing[*]} with apt-get" >&2
	apt-get update
	pkgs=()
	for m in "${missing[@]}"; do
		case $m in
		postgresql)
			if apt-cache policy postgresql-15 2>/dev/null | grep -q 'Candidate: [0-9]'; then
				pkgs+=(postgresql-15)
			else
				pkgs+=(postgresql)
			fi
			;;
		gcc) pkgs+=(gcc libc6-dev) ;;
		chromium) pkgs+=(chromium) ;;
		esac
	done
	apt-get install -y --no-install-recommends "${pkgs[@]}"
	if [[ -z ${NSELF_AUDIT_TEST_DATABASE_URL:-} ]] && ! have_pg_server; then
		echo "scripts/test.sh: installed ${pkgs[*]} but still no PostgreSQL server binaries (initdb) found" >&2
		exit 1
	fi
fi

export CGO_ENABLED=1 # -race requires cgo

echo "+ go vet ./..." >&2
go vet ./...

if (($# == 0)); then
	set -- ./...
fi
echo "+ go test -count=1 -race -timeout 20m $*" >&2
go test -count=1 -race -timeout 20m "$@"
