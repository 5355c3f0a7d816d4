#!/bin/bash
# FLUX-like head geometry: head_dim 128, rope axes (16,56,56), 2 heads (hidden 256), 16x16 = 256 image tokens, 32 text tokens
export ND=4 NS=8 HD=128 NH=2 SIDE=16 TT=32 FN=2 OUTDIR=/tmp/gap/out_big
mkdir -p $OUTDIR /tmp/gap/logs_big
run() { python /tmp/gap/run_variant.py "$@" > /tmp/gap/logs_big/$(echo "$@" | tr ' ' _)$W16$XR.log 2>&1; tail -1 /tmp/gap/logs_big/$(echo "$@" | tr ' ' _)$W16$XR.log; }
run eager bfloat16
run fx_eager bfloat16
run fx_compiled bfloat16
run cd_eager bfloat16
run cd_compile bfloat16
run compile_full bfloat16
run compile_blocks bfloat16
run fx_compiled bfloat16 ones
run fx_compiled bfloat16 static emulate
run fx_eager float32
run eager float32
W16=1 run fx_eager float64
W16=1 XR=1 run fx_eager float64
W16=1 XR=1 run eager float64
