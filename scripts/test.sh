#!/usr/bin/env bash
# Runs every check of the project: gofmt, go vet, staticcheck (when
# installed), the race-enabled tests — unit tests, the scapy ESP oracle and,
# as root, the network-namespace integration tests — then a short run of
# each fuzz target.
# VNIC_REQUIRE_ORACLE=1 turns a missing scapy into a failure and
# VNIC_REQUIRE_ROOT_TESTS=1 a missing root or tool (CI sets both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
echo "== go vet"
go vet ./...
if command -v staticcheck >/dev/null; then
	echo "== staticcheck"
	staticcheck ./...
fi
echo "== go test -race"
go test -race -count=1 ./...
# The race detector makes sync.Pool drop items, so the allocation tests
# skip under it: run them once more without it.
echo "== allocation tests"
go test -count=1 -run 'Alloc' ./...

fuzztime=${VNIC_FUZZTIME:-10s}
echo "== fuzz targets ($fuzztime each)"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "-- $pkg $target"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
	done
done
