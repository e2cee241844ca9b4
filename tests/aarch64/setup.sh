#!/usr/bin/env bash
# Sets up an emulated aarch64 Python for `make test-aarch64` (see tests/aarch64/run.sh), caching everything under
# $AARCH64_DIR (default build/aarch64, gitignored). Nothing is installed on this machine except Debian's
# qemu-user-static (apt-get, as root, when qemu-aarch64-static is missing). Each step is skipped once done.
#
#   sysroot/         Debian bookworm's arm64 python3.11 (+ libstdc++6), unpacked from its .debs, run with
#                    `qemu-aarch64-static -L sysroot`; apt runs with a private state folder (apt/), so this machine's
#                    apt configuration and dpkg database are untouched
#   qemu-trixie/     Debian trixie's qemu-aarch64 (10.0, a static binary, unpacked from its .deb, not installed):
#                    the newest onnxruntime crashes under bookworm's qemu 7.2 (tests/aarch64/README.md); optional
#   wheels/          aarch64 wheels from PyPI (pip download --platform): numpy, tokenizers, sentencepiece, pytest, hypothesis at
#                    constraints.txt's versions; onnxruntime at each version in $ORT_VERSIONS
#   site/, ort/V/    those wheels unpacked (PYTHONPATH=ort/V:site)
#   x86/ort-V/       x86_64 venvs with the runtime's dependencies and onnxruntime V, to record x86's results with
#                    the same onnxruntime version
#
# Exit status 3 (with a message) when this machine cannot run it: not x86_64, no qemu and no way to install it,
# no Debian archive keyring, or no network on the first run.
set -euo pipefail

A=${AARCH64_DIR:-build/aarch64}
ORT_VERSIONS=${ORT_VERSIONS:-1.27.0 1.32.0}
VENV_PY=${VENV_PY:-.venv/bin/python}
SUITE=bookworm # its python3.11 matches the cp311 wheels
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLATFORM=(--platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --python-version 3.11
	--implementation cp --abi cp311 --only-binary=:all:)
PIP=("$VENV_PY" -m pip --disable-pip-version-check -q)

skip() {
	echo "test-aarch64 skipped: $*" >&2
	exit 3
}
log() { echo "aarch64 setup: $*"; }
mkdir -p "$A"
A=$(cd "$A" && pwd)

[ "$(uname -m)" = x86_64 ] || skip "this machine is $(uname -m), not x86_64 (the x86 references need it)"
[ -f "$KEYRING" ] || skip "no Debian archive keyring ($KEYRING): the arm64 Python comes from Debian's archive"

# --- qemu (Debian's package) -------------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		log "installing qemu-user-static"
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			qemu-user-static; } >"$A/apt-qemu.log" 2>&1 || { tail -5 "$A/apt-qemu.log" >&2; skip "apt-get could not install qemu-user-static"; }
	else
		skip "qemu-aarch64-static is missing (Debian: apt-get install qemu-user-static; needs root)"
	fi
fi

# A private apt for another architecture or suite: its own sources, lists, cache and an empty dpkg status.
private_apt() { # DIR ARCH SOURCES-LINE... ; then use "${APT_OPTS[@]}"
	local dir=$1 arch=$2
	shift 2
	mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$dir/etc/none"
	: >"$dir/status"
	printf '%s\n' "$@" >"$dir/etc/sources.list"
	APT_OPTS=(-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o "Dir::State=$dir/state"
		-o "Dir::State::status=$dir/status" -o "Dir::Cache=$dir/cache" -o "Dir::Etc::SourceList=$dir/etc/sources.list"
		-o "Dir::Etc::SourceParts=$dir/etc/none" -o "Dir::Etc::Preferences=$dir/etc/none"
		-o "Dir::Etc::PreferencesParts=$dir/etc/none" -o Debug::NoLocking=1 -o APT::Install-Recommends=0
		-o APT::Sandbox::User=root -q)
}

# --- the arm64 Python ----------------------------------------------------------------------------------------------
if [ ! -f "$A/sysroot/.complete" ]; then
	log "fetching Debian $SUITE's arm64 python3.11"
	private_apt "$A/apt" arm64 "deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE main"
	apt-get "${APT_OPTS[@]}" update >"$A/apt.log" 2>&1 || { tail -5 "$A/apt.log" >&2; skip "cannot reach Debian's archive"; }
	apt-get "${APT_OPTS[@]}" install -y --download-only python3.11 libstdc++6 >>"$A/apt.log" 2>&1 ||
		{ tail -5 "$A/apt.log" >&2; skip "cannot download Debian's arm64 python3.11"; }
	rm -rf "$A/sysroot" && mkdir -p "$A/sysroot"
	for deb in "$A"/apt/cache/archives/*.deb; do dpkg-deb -x "$deb" "$A/sysroot"; done
	touch "$A/sysroot/.complete"
fi

# --- a newer qemu (optional) ---------------------------------------------------------------------------------------
if [ ! -x "$A/qemu-trixie/qemu-aarch64" ] && [ ! -f "$A/qemu-trixie/.unavailable" ]; then
	log "fetching Debian trixie's qemu-aarch64 (unpacked, not installed)"
	mkdir -p "$A/qemu-trixie"
	private_apt "$A/apt-trixie" amd64 "deb [arch=amd64 signed-by=$KEYRING] $MIRROR trixie main"
	if (apt-get "${APT_OPTS[@]}" update && cd "$A/apt-trixie/cache/archives" &&
		apt-get "${APT_OPTS[@]}" download qemu-user) >"$A/apt-trixie.log" 2>&1; then
		dpkg-deb --fsys-tarfile "$A"/apt-trixie/cache/archives/qemu-user_*.deb |
			tar -x -O ./usr/bin/qemu-aarch64 >"$A/qemu-trixie/qemu-aarch64"
		chmod +x "$A/qemu-trixie/qemu-aarch64"
		rm -f "$A"/apt-trixie/cache/archives/*.deb
	else
		echo "trixie's qemu-user could not be fetched (see $A/apt-trixie.log)" | tee "$A/qemu-trixie/.unavailable"
	fi
fi

# --- aarch64 wheels --------------------------------------------------------------------------------------------------
if [ ! -f "$A/site/.complete" ] || [ ! -d "$A/site/sentencepiece" ]; then
	log "downloading aarch64 wheels (numpy, tokenizers, sentencepiece, pytest, hypothesis; versions from constraints.txt)"
	"${PIP[@]}" download -d "$A/wheels" "${PLATFORM[@]}" -c constraints.txt \
		numpy tokenizers sentencepiece pytest hypothesis 2>&1 | grep -v "^WARNING: Location" || true
	rm -rf "$A/site"
	"${PIP[@]}" install --no-index --find-links "$A/wheels" --target "$A/site" "${PLATFORM[@]}" -c constraints.txt \
		numpy tokenizers sentencepiece pytest hypothesis 2>&1 | grep -v "^WARNING: Location" || true
	[ -d "$A/site/numpy" ] && [ -d "$A/site/tokenizers" ] && [ -d "$A/site/sentencepiece" ] && [ -d "$A/site/_pytest" ] ||
		skip "aarch64 wheels missing"
	touch "$A/site/.complete"
fi
grep -v '^onnxruntime==' constraints.txt >"$A/constraints-without-onnxruntime.txt"
for v in $ORT_VERSIONS; do
	if [ ! -f "$A/ort/$v/.complete" ]; then
		log "onnxruntime $v for aarch64"
		"${PIP[@]}" download --no-deps -d "$A/wheels" "${PLATFORM[@]}" "onnxruntime==$v" 2>&1 | grep -v "^WARNING: Location" || true
		whl=$(ls "$A"/wheels/onnxruntime-"$v"-*aarch64*.whl 2>/dev/null | head -1)
		[ -n "$whl" ] || skip "no aarch64 wheel of onnxruntime $v"
		rm -rf "$A/ort/$v" && mkdir -p "$A/ort/$v"
		"$VENV_PY" -m zipfile -e "$whl" "$A/ort/$v"
		touch "$A/ort/$v/.complete"
	fi
	if [ ! -f "$A/x86/ort-$v/.complete" ] || ! "$A/x86/ort-$v/bin/python" -c "import sentencepiece" 2>/dev/null; then
		log "x86_64 runtime venv with onnxruntime $v (for the references)"
		rm -rf "$A/x86/ort-$v"
		"$VENV_PY" -m venv "$A/x86/ort-$v"
		"$A/x86/ort-$v/bin/python" -m pip install -q --disable-pip-version-check \
			-c "$A/constraints-without-onnxruntime.txt" numpy tokenizers sentencepiece "onnxruntime==$v" 2>&1 | grep -v "^WARNING: Location" || true
		"$A/x86/ort-$v/bin/python" -c "import onnxruntime" || skip "onnxruntime $v does not install on x86_64"
		touch "$A/x86/ort-$v/.complete"
	fi
done
log "ready in $A"
