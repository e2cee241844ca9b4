#!/usr/bin/env bash
# `make test-aarch64`: the CPU runtime on aarch64 (Jetson's ARM cores, Graviton, Raspberry Pi 64-bit), emulated by
# qemu-user on this x86_64 machine, against bundles exported and run on x86_64. See tests/aarch64/README.md.
#
#  1. tests/aarch64/setup.sh: qemu, Debian's arm64 python3.11, aarch64 wheels, x86 reference venvs (cached).
#  2. On x86_64 (.venv, with torch): the real default INT8 bundle (mbert-edge export default --quantize dynamic,
#     cached), tiny bundles of the three tasks, and x86's results with each onnxruntime version checked.
#  3. Under Debian's qemu-aarch64-static, onnxruntime $ORT_AARCH64: tests/aarch64/check.py verify (embeddings,
#     labels, entity spans vs x86) and the runtime's own pytest files that need no torch ($PYTEST_FILES).
#  4. The newest onnxruntime ($ORT_NEWEST): whether it imports under Debian's qemu (onnxruntime >= 1.28 crashes
#     under qemu 7.2: reported, not a failure), then check.py verify under trixie's qemu 10 when it was fetched.
# CPU-heavy steps run under `nice` ($NICE).
set -euo pipefail

A=${AARCH64_DIR:-build/aarch64}
ORT_AARCH64=${ORT_AARCH64:-1.27.0}
ORT_NEWEST=${ORT_NEWEST:-1.32.0}
NICE=${NICE:-nice -n 19}
PYTEST_FILES=${PYTEST_FILES:-tests/test_batching.py tests/test_inputs.py tests/test_bundle_integrity.py tests/test_cli.py tests/test_runtime_is_light.py}
VENV=${VENV:-.venv}
export AARCH64_DIR=$A ORT_VERSIONS="$ORT_AARCH64 $ORT_NEWEST" VENV_PY=$VENV/bin/python

start=$(date +%s)
rc=0
bash tests/aarch64/setup.sh || rc=$?
if [ $rc = 3 ]; then exit 0; fi # skipped, with a message
[ $rc = 0 ] || exit $rc
A=$(cd "$A" && pwd)
SYSROOT=$A/sysroot
QEMU=(qemu-aarch64-static -L "$SYSROOT")
QEMU_VERSION=$(qemu-aarch64-static --version | head -1)
PY_ARM=$SYSROOT/usr/bin/python3.11
DEFAULT=${AARCH64_DEFAULT_BUNDLE:-$A/bundles/default-int8} # make passes the INT8 bundle test-browser uses too
REF=$A/ref
elapsed() { echo "$(($(date +%s) - start)) s"; }

# --- x86_64: bundles and references ---------------------------------------------------------------------------
DEFAULT=$(mkdir -p "$DEFAULT" && cd "$DEFAULT" && pwd)
if [ ! -f "$DEFAULT/manifest.json" ]; then
	echo "== exporting the default INT8 bundle (once; a few minutes)"
	$NICE "$VENV/bin/mbert-edge" export default -o "$DEFAULT" --quantize dynamic --force >"$A/export-default.log" 2>&1 ||
		{ tail -20 "$A/export-default.log"; exit 1; }
fi
TRANSFORMERS_VERBOSITY=error $NICE "$VENV/bin/python" tests/aarch64/check.py bundles "$REF" 2>&1 | grep -v "^INFO" | tail -3
for v in $ORT_AARCH64 $ORT_NEWEST; do
	PYTHONPATH=$PWD $NICE "$A/x86/ort-$v/bin/python" tests/aarch64/check.py record "$REF" --default-bundle "$DEFAULT" \
		--expected "$REF/expected-x86-$v.json"
done
echo "== x86_64 side ready ($(elapsed))"

# --- aarch64: the runtime and its tests under emulation ---------------------------------------------------------
arm() { # ORT-VERSION QEMU... -- ARGS: the aarch64 Python with onnxruntime V, the checkout's source first
	local v=$1
	shift
	PYTHONPATH=$PWD:$A/ort/$v:$A/site PYTHONDONTWRITEBYTECODE=1 $NICE "$@"
}
echo "== aarch64 ($QEMU_VERSION), onnxruntime $ORT_AARCH64: runtime vs x86_64"
arm "$ORT_AARCH64" "${QEMU[@]}" "$PY_ARM" tests/aarch64/check.py verify "$REF" --default-bundle "$DEFAULT" \
	--expected "$REF/expected-x86-$ORT_AARCH64.json"
echo "== aarch64 ($QEMU_VERSION), onnxruntime $ORT_AARCH64: pytest (no torch) [$(elapsed)]"
# shellcheck disable=SC2086
MBERT_EDGE_AARCH64_BUNDLES=$REF/pytest-bundles MBERT_EDGE_AARCH64_QEMU="qemu-aarch64-static -L $SYSROOT" \
	HYPOTHESIS_STORAGE_DIRECTORY=$A/hypothesis arm "$ORT_AARCH64" "${QEMU[@]}" "$PY_ARM" -m pytest -q -p no:cacheprovider --noconftest \
	-p tests.aarch64.pytest_prebuilt $PYTEST_FILES

echo "== the newest onnxruntime, $ORT_NEWEST [$(elapsed)]"
probe=0
arm "$ORT_NEWEST" timeout 300 "${QEMU[@]}" "$PY_ARM" -c "import onnxruntime" >"$A/probe-$ORT_NEWEST.log" 2>&1 || probe=$?
if [ $probe = 0 ]; then
	echo "onnxruntime $ORT_NEWEST imports under $QEMU_VERSION"
else
	echo "onnxruntime $ORT_NEWEST does not import under $QEMU_VERSION (exit $probe: $(tail -1 "$A/probe-$ORT_NEWEST.log"))"
	echo "  known: qemu 7.x shows the guest this x86 host's /proc/cpuinfo, and the cpuinfo library in onnxruntime >= 1.28"
	echo "  crashes on a /proc/cpuinfo without ARM processor entries; real ARM boards are not affected (README.md here)"
fi
if [ -x "$A/qemu-trixie/qemu-aarch64" ]; then
	Q10=("$A/qemu-trixie/qemu-aarch64" -L "$SYSROOT")
	echo "== aarch64 ($("${Q10[0]}" --version | head -1)), onnxruntime $ORT_NEWEST: runtime vs x86_64"
	arm "$ORT_NEWEST" "${Q10[@]}" "$PY_ARM" tests/aarch64/check.py verify "$REF" --default-bundle "$DEFAULT" \
		--expected "$REF/expected-x86-$ORT_NEWEST.json"
else
	echo "trixie's qemu was not fetched ($(cat "$A/qemu-trixie/.unavailable" 2>/dev/null)): onnxruntime $ORT_NEWEST not verified"
fi
echo "== test-aarch64 passed in $(elapsed): onnxruntime $ORT_AARCH64 under $QEMU_VERSION$([ -x "$A/qemu-trixie/qemu-aarch64" ] && echo ", $ORT_NEWEST under qemu 10")"
