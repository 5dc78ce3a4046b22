#!/bin/sh
# Measure triggerd against the DESIGN.md budgets on this machine.
# Usage: bench/budgets.sh [RUNS]   (from the repository root, after a build)
#
# Runs are interleaved (A, B, A, B, ...) so machine noise hits both sides of
# a comparison alike; report medians.
set -eu
RUNS=${1:-3}
B=./build/bench/bench_timers
R=./build/bench/bench_ref
pick() { grep -E "$1" | tr -s ' ' | sed 's/^ //'; }

echo "== lateness: 100,000 timers over 10 s; pre-cascade on (default) vs off"
i=0
while [ $i -lt "$RUNS" ]; do
	for pc in 1024 0; do
		echo "-- run $i, --precascade-budget $pc"
		$B -n 100000 --window-ms 10000 --triggerd-arg=--precascade-budget \
			--triggerd-arg=$pc | pick "(fired|visible) - due (p50|p99|p99.9|max) |exactly once|RSS per"
	done
	i=$((i + 1))
done

echo "== events/s: 100,000 timers due at one instant, vs Redis alone"
i=0
while [ $i -lt "$RUNS" ]; do
	echo "-- run $i"
	$R -n 100000 | pick "raw pipelined|apply script"
	$B -n 100000 --window-ms 0 | pick "events/s \(stream|exactly once"
	i=$((i + 1))
done

echo "== restart: 100,000 stored triggers re-armed"
$B -n 100000 --window-ms 5000 --restart | pick "store loaded|SIGTERM to ready|exactly once"

echo "== 1,000,000 timers over 10 s; pre-cascade on vs off"
for pc in 1024 0; do
	echo "-- --precascade-budget $pc"
	$B -n 1000000 --window-ms 10000 --triggerd-arg=--precascade-budget \
		--triggerd-arg=$pc | pick "RSS per|submit rate|store rate|(fired|visible) - due (p50|p99|p99.9|max) |events/s \(stream|exactly once|CPU firing"
done
