#!/usr/bin/env bash
# Coverage-guided fuzzing with `go test -fuzz`, one target after another.
#
#   bash scripts/fuzz.sh                      # every Fuzz* target, 60 s each
#   bash scripts/fuzz.sh -t 10m FuzzAuthenticate
#   bash scripts/fuzz.sh -t 300000x FuzzDecodeEventInput FuzzParseListQuery   # as CI runs it
#
# Options: -t BUDGET    time or input count per target (go test -fuzztime:
#                       60s, 10m, or 300000x; default 60s). A duration can end
#                       in a spurious "context deadline exceeded" failure on
#                       Go 1.26 (go.dev/issue/75804): a count cannot
#          -p N         fuzzing workers per target (default: go's, one per CPU)
#          -m LIMIT     go test -fuzzminimizetime (default 2000x: shrinking each
#                       new input costs at most 2000 runs; go's 60s default
#                       would spend a short run shrinking instead of fuzzing)
#
# The seed corpora live in testdata/fuzz/<Target>/ of each package and also
# run in every plain `go test`. A failing input is written there by Go: the
# script prints its path, and committing it keeps it as a regression seed.
# Prints one line per target (inputs tried, rate, new coverage) and exits 1
# if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

fuzztime=60s
workers=""
minimize=2000x
while getopts "t:p:m:h" opt; do
	case $opt in
	t) fuzztime=$OPTARG ;;
	p) workers=$OPTARG ;;
	m) minimize=$OPTARG ;;
	h)
		awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
		exit 0
		;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))

# target → package folder, from the test files (cheaper than go test -list,
# which builds every package's tests).
declare -A pkg_of=()
while IFS=: read -r file line; do
	name=$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' <<<"$line")
	[[ -n $name ]] && pkg_of[$name]=./$(dirname "${file#./}")
done < <(grep -rE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^./vendor/' || true)
if ((${#pkg_of[@]} == 0)); then
	echo "scripts/fuzz.sh: no Fuzz targets found" >&2
	exit 1
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
	mapfile -t targets < <(printf '%s\n' "${!pkg_of[@]}" | sort)
fi
for t in "${targets[@]}"; do
	if [[ -z ${pkg_of[$t]:-} ]]; then
		echo "scripts/fuzz.sh: no target $t; there are: $(printf '%s\n' "${!pkg_of[@]}" | sort | tr '\n' ' ')" >&2
		exit 2
	fi
done

# seconds D prints the whole seconds of a Go duration such as 1m3s.
seconds() {
	local d=$1 total=0
	while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
		case ${BASH_REMATCH[2]} in
		h) total=$((total + BASH_REMATCH[1] * 3600)) ;;
		m) total=$((total + BASH_REMATCH[1] * 60)) ;;
		s) total=$((total + BASH_REMATCH[1])) ;;
		esac
		d=${BASH_REMATCH[3]}
	done
	echo "$total"
}

args=(-run '^$' -fuzztime "$fuzztime" -fuzzminimizetime "$minimize")
if [[ -n $workers ]]; then
	args+=(-parallel "$workers")
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0
total=0
printf '%-24s %-18s %8s %14s %10s %8s\n' target package time execs execs/s new
for t in "${targets[@]}"; do
	pkg=${pkg_of[$t]}
	rc=0
	go test "${args[@]}" -fuzz "^$t\$" "$pkg" >"$out" 2>&1 || rc=$?
	# "fuzz: elapsed: 10s, execs: 123456 (12345/sec), new interesting: 12 (total: 40)"
	last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$out" | tail -n 1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	elapsed=$(seconds "$(sed -nE 's/^fuzz: elapsed: ([0-9hms]+),.*/\1/p' <<<"$last")")
	fresh=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	rate=$(awk -v n="${execs:-0}" -v s="${elapsed:-0}" 'BEGIN {if (s > 0) printf "%.0f", n / s; else print "-"}')
	status=ok
	if ((rc != 0)); then
		status=FAILED
		failed=1
	fi
	total=$((total + ${execs:-0}))
	printf '%-24s %-18s %8s %14s %10s %8s %s\n' "$t" "${pkg#./}" "${elapsed:-?}s" "${execs:-?}" "$rate" "${fresh:-?}" "$status"
	if ((rc != 0)); then
		tail -n 40 "$out" >&2
		grep -oE 'testdata/fuzz/[^ ]+' "$out" | sort -u | sed 's/^/  failing input written to: /' >&2 || true
	fi
done
echo "inputs tried: $total over ${#targets[@]} targets, $fuzztime each"
exit "$failed"
