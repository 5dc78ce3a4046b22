#!/bin/sh
# triggerd developer entry point. On a fresh Debian 12 machine:
#
#   ./dev.sh run      install dependencies, build, run triggerd (it starts a
#                     private redis-server when no Redis is configured)
#   ./dev.sh test     install dependencies, build, run the whole test suite
#
# Also: ./dev.sh test --sanitize (ASan + UBSan build), ./dev.sh fuzz [SECONDS],
# ./dev.sh bench [ARGS...] (timers), ./dev.sh bench-http [ARGS...] (http polls
# against nginx-light), ./dev.sh bench-webhook [ARGS...] (webhook receiver
# against nginx-light), ./dev.sh bench-waits [ARGS...] (redis, file and kafka
# waits), ./dev.sh build.
set -eu

cd "$(dirname "$0")"

PKGS="meson ninja-build pkg-config gcc liburing-dev libhiredis-dev libmsgpack-dev \
libcmocka-dev libcurl4-openssl-dev libpcre2-dev libssl-dev libhttp-parser-dev librdkafka-dev redis-server"
# The codec's locale test needs a locale whose decimal point is a comma.
TEST_PKGS="locales openssl"
FUZZ_PKGS="clang libclang-rt-14-dev"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install what is missing (and only then touch apt, so repeat runs are quick).
deps() {
	missing=""
	for p in $PKGS "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "dev.sh: installing:$missing" >&2
		as_root apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
	fi
}

# build DIR [meson options...]
build() {
	dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >&2
	fi
	ninja -C "$dir" >&2
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
run)
	deps
	build build
	echo "dev.sh: starting triggerd; in another terminal try:" >&2
	echo "  ./build/triggerctl timer hello --after 5s && ./build/triggerctl follow --from 0" >&2
	exec ./build/triggerd "$@"
	;;
build)
	deps
	build build
	;;
test)
	deps $TEST_PKGS
	if ! locale -a 2>/dev/null | grep -qi '^de_DE.utf-\?8$'; then
		as_root localedef -i de_DE -f UTF-8 de_DE.UTF-8
	fi
	if [ "${1:-}" = "--sanitize" ]; then
		deps
		build build-san -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			meson test -C build-san --print-errorlogs --timeout-multiplier 3
	else
		deps
		build build
		meson test -C build --print-errorlogs
	fi
	;;
fuzz)
	secs=${1:-60}
	deps $FUZZ_PKGS
	CC=clang build build-fuzz -Dfuzz=true -Dtests=false -Dbuildtype=debugoptimized
	status=0
	for f in build-fuzz/fuzz/fuzz_*; do
		[ -f "$f" ] && [ -x "$f" ] || continue
		name=$(basename "$f")
		corpus=fuzz/corpus/${name#fuzz_}
		work=$(mktemp -d)
		log=$(mktemp)
		echo "dev.sh: fuzzing $name for ${secs}s" >&2
		# Crash reproducers land in the work dir; a finding fails the run.
		if ! (cd "$work" && "$OLDPWD/$f" -max_total_time="$secs" -print_final_stats=1 \
			. "$OLDPWD/$corpus") >"$log" 2>&1; then
			cat "$log" >&2
			echo "dev.sh: $name found a problem; reproducer in $work" >&2
			status=1
		else
			grep -E "stat::number_of_executed_units|stat::new_units_added" "$log" >&2
			rm -rf "$work"
		fi
		rm -f "$log"
	done
	exit $status
	;;
bench)
	deps
	build build
	exec ./build/bench/bench_timers "$@"
	;;
bench-http)
	deps nginx-light
	build build
	exec ./build/bench/bench_http "$@"
	;;
bench-webhook)
	deps nginx-light
	build build
	exec ./build/bench/bench_webhook "$@"
	;;
bench-waits)
	deps
	build build
	exec ./build/bench/bench_waits "$@"
	;;
*)
	sed -n '2,14p' "$0"
	exit 2
	;;
esac
