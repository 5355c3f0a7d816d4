#!/bin/bash
# Produces /tmp/gap/out/*.pt ; logs in /tmp/gap/logs
mkdir -p /tmp/gap/logs
run() { python /tmp/gap/run_variant.py "$@" > /tmp/gap/logs/$(echo "$@" | tr ' ' _).log 2>&1; tail -1 /tmp/gap/logs/$(echo "$@" | tr ' ' _).log; }
run eager bfloat16
run eager float64
run fx_eager float32
run fx_eager float64
run cd_eager bfloat16
run fx_compiled bfloat16
run cd_compile bfloat16
run compile_full bfloat16
run compile_blocks bfloat16
run fx_compiled bfloat16 ones
# float64 references of the bf16 model (weights/inputs rounded through bf16), added after the first pass:
W16=1 run eager float64
W16=1 run fx_eager float64
W16=1 XR=1 run fx_eager float64
W16=1 XR=1 run eager float64
