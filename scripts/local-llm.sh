#!/usr/bin/env bash
# A local CPU LLM behind an OpenAI-compatible streaming endpoint, for `make run` on a machine with
# no GPU: builds llama.cpp's llama-server and fetches a small GGUF model into a cache outside the
# checkout, keyed by version. Idempotent, and instant when everything is already cached.
#
#   scripts/local-llm.sh                build and download whatever is missing, then print the paths
#   scripts/local-llm.sh --print-paths  print the paths only; builds and downloads nothing
#   scripts/local-llm.sh --check        exit 0 when both files are cached, else 1; prints nothing
#
# Output on stdout, for the Python side to read (progress and errors go to stderr):
#   binary=$CACHE/llama-server-<llama-cpp-python version>-<cpu key>/llama-server
#   model=$CACHE/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
# Any failure exits non-zero with a message starting "local-llm: error:".
#
# Serve it with (OpenAI-compatible: /v1/chat/completions with stream:true, /v1/models, /health):
#   <binary> -m <model> -t 1 -np 1 -c 4096 --jinja --alias <name> --host 127.0.0.1 --port 8091
# -t: leave a core to the speech engines; with 2 threads on 2 cores, anything else running makes
# generation 3 to 10 times slower (measurements in docs/local-llm-notes.md).
#
# Where everything comes from (nothing but PyPI and Debian packages):
#   llama-server  built from the llama.cpp source vendored in the llama-cpp-python sdist (MIT),
#                 fetched with pip and checked against a pinned sha256; built with Debian's cmake,
#                 g++ and make (installed with apt-get when missing, if running as root). The UI
#                 is left out: its build would download assets from Hugging Face.
#   model         Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0 upstream), a third-party
#                 re-upload on PyPI as six wheels pinned by hash in scripts/local-llm-model.txt;
#                 joined in part order and checked against the GGUF's own sha256.
#
# Cache keys: the binary's directory name holds the llama-cpp-python version (which pins the
# llama.cpp commit) and a CPU key. The build uses -march=native (GGML_NATIVE=ON), so the binary
# only runs on CPUs with the same instruction sets: the key is "<arch>-native-<hash of the first
# CPU's vendor, family, model and flags in /proc/cpuinfo>", and another CPU gets its own build.
# The model's file name is its identity; its content is checked once, when it is downloaded.
# Files only appear in the cache by an atomic rename once complete, so an interrupted run never
# leaves half a binary or half a model behind.
#
# Environment:
#   UNMUTE_CACHE_DIR     the cache directory (default $HOME/.cache/unmute-trio)
#   PYTHON               the Python whose pip downloads (default: this checkout's .venv/bin/python,
#                        else python3)
#   UNMUTE_LLAMA_NATIVE  1 (default) -march=native as above; 0 a portable build (x86-64: the
#                        AVX/AVX2/FMA/F16C/BMI2 baseline) under the CPU key "<arch>-portable"
#   UNMUTE_BUILD_JOBS    parallel compile jobs (default: the number of CPUs)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36 # vendors ggml-org/llama.cpp@0c1e57098
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
MODEL_NAME=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
MODEL_SIZE=491400064
MODEL_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
model_requirements="$here/local-llm-model.txt"

log() { printf 'local-llm: %s\n' "$*" >&2; }
die() {
    printf 'local-llm: error: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# What the binary was compiled for; see "Cache keys" above.
cpu_key() {
    local arch
    arch="$(uname -m)"
    if [[ "${UNMUTE_LLAMA_NATIVE:-1}" == "0" ]]; then
        echo "$arch-portable"
        return
    fi
    local ident=""
    if [[ -r /proc/cpuinfo ]]; then
        # The first processor's block: x86 has vendor_id/cpu family/model/model name/flags, ARM
        # has CPU implementer/architecture/variant/part and Features.
        ident="$(awk 'NF == 0 { exit }
            /^(vendor_id|cpu family|model|model name|flags)[ \t]*:/ ||
            /^(Features|CPU implementer|CPU architecture|CPU variant|CPU part)[ \t]*:/' \
            /proc/cpuinfo)"
    fi
    [[ -n "$ident" ]] || ident="$(uname -a)"
    echo "$arch-native-$(printf '%s\n' "$ident" | sha256sum | cut -c1-12)"
}

# --no-cache-dir: the cache below is the cache; pip's would keep a second copy of ~550 MB.
pip() { "$PYTHON" -m pip --disable-pip-version-check --no-input --no-cache-dir "$@"; }
need_pip() {
    pip --version >/dev/null 2>&1 ||
        die "'$PYTHON -m pip' does not work; run 'make install' first (creates .venv) or set PYTHON"
}

mb() { echo "$(($1 / 1000000)) MB"; }
filesize() { stat -c %s "$1"; }

ensure_build_tools() {
    local missing=() tool
    for tool in cmake g++ make; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ "$(id -u)" != "0" ]]; then
        die "building llama-server needs ${missing[*]}: run" \
            "'sudo apt-get install -y --no-install-recommends cmake g++ make' and try again"
    fi
    log "installing ${missing[*]} (Debian packages, to build llama-server)"
    export DEBIAN_FRONTEND=noninteractive
    local attempt
    # A mirror can fail for a moment; three tries before giving up.
    for attempt in 1 2 3; do
        if apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends cmake g++ make >/dev/null; then
            break
        fi
        [[ $attempt == 3 ]] && die "could not install cmake g++ make with apt-get"
        log "apt-get failed (try $attempt of 3); retrying in 5 s"
        sleep 5
    done
}

# Runs a command with its output in a log file, printing a progress line (cmake's percentage and
# the elapsed time) every 30 s; on failure prints the log's end and exits.
run_logged() {
    local label="$1" logfile="$2"
    shift 2
    local start=$SECONDS
    if ! "$@" 2>&1 | {
        last=$SECONDS progress="" partial="" line=""
        while :; do
            if IFS= read -r -t 30 line; then
                line="$partial$line"
                partial=""
                printf '%s\n' "$line" >>"$logfile"
                if [[ "$line" =~ ^\[\ *([0-9]+%)\] ]]; then
                    progress="${BASH_REMATCH[1]}, "
                fi
            elif (($? > 128)); then
                partial+="$line" # timed out: keep what came of the line so far
            else
                [[ -z "$partial$line" ]] || printf '%s\n' "$partial$line" >>"$logfile"
                break
            fi
            if ((SECONDS - last >= 30)); then
                log "$label: ${progress}$((SECONDS - start)) s"
                last=$SECONDS
            fi
        done
    }; then
        log "$label failed after $((SECONDS - start)) s; the end of its log:"
        tail -n 40 "$logfile" >&2
        die "$label failed"
    fi
}

build_server() {
    ensure_build_tools
    need_pip
    local t0=$SECONDS
    local jobs="${UNMUTE_BUILD_JOBS:-$(nproc)}"
    local native=ON
    [[ "${UNMUTE_LLAMA_NATIVE:-1}" == "0" ]] && native=OFF
    log "building llama-server into $bindir"
    log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (holds llama.cpp) with pip"
    printf 'llama-cpp-python==%s --hash=sha256:%s\n' \
        "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CPP_PYTHON_SHA256" >"$tmp/sdist-requirements.txt"
    # pip prepares the sdist's metadata (installing scikit-build-core into a throwaway env).
    pip download --no-deps --no-binary :all: --require-hashes \
        -r "$tmp/sdist-requirements.txt" -d "$tmp/sdist" >&2 ||
        die "pip could not download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    local sdist="$tmp/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    [[ -f "$sdist" ]] || die "pip did not leave $sdist"
    local sha
    sha="$(sha256sum "$sdist" | cut -d' ' -f1)"
    [[ "$sha" == "$LLAMA_CPP_PYTHON_SHA256" ]] ||
        die "$sdist has sha256 $sha, expected $LLAMA_CPP_PYTHON_SHA256"
    log "sdist: $(mb "$(filesize "$sdist")"), sha256 ok; extracting llama.cpp"
    mkdir "$tmp/src"
    tar -xzf "$sdist" -C "$tmp/src" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    rm -f "$sdist"
    local src="$tmp/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    # llama.cpp asks git for its build number: keep git from finding a repository above $tmp.
    export GIT_CEILING_DIRECTORIES="$tmp"
    local cmake_flags=(
        -DCMAKE_BUILD_TYPE=Release
        -DBUILD_SHARED_LIBS=OFF
        "-DGGML_NATIVE=$native"
        -DLLAMA_BUILD_COMMON=ON
        -DLLAMA_BUILD_TOOLS=ON  # the server lives under tools/
        -DLLAMA_BUILD_SERVER=ON # (both default to ON at top level; explicit all the same)
        -DLLAMA_BUILD_TESTS=OFF
        -DLLAMA_BUILD_EXAMPLES=OFF
        -DLLAMA_BUILD_APP=OFF
        -DLLAMA_BUILD_UI=OFF         # would run npm
        -DLLAMA_USE_PREBUILT_UI=OFF  # would download the web UI from Hugging Face at build time
        -DLLAMA_OPENSSL=OFF          # no HTTPS client needed: the model is a local file
    )
    log "configuring (cmake, GGML_NATIVE=$native)"
    run_logged "cmake configure" "$tmp/build.log" cmake -S "$src" -B "$tmp/build" "${cmake_flags[@]}"
    log "compiling llama-server with $jobs jobs (5 to 15 min on 2 cores); a line every 30 s"
    run_logged "compiling llama-server" "$tmp/build.log" \
        cmake --build "$tmp/build" --target llama-server -j "$jobs"
    local built="$tmp/build/bin/llama-server"
    [[ -x "$built" ]] || die "the build finished without $built"
    local version
    version="$("$built" --version 2>&1 | tr '\n' ' ')" ||
        die "the built llama-server does not run: $version"
    mkdir "$tmp/dist"
    cp "$built" "$tmp/dist/llama-server"
    cp "$src/LICENSE" "$tmp/dist/LICENSE"
    {
        echo "llama-server built by unmute-trio's scripts/local-llm.sh on $(date -u +%FT%TZ)"
        echo "source: llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist, sha256 $LLAMA_CPP_PYTHON_SHA256"
        echo "llama-server --version: $version"
        echo "cmake flags: ${cmake_flags[*]}"
        echo "compiler: $(g++ --version | head -n 1)"
        echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
    } >"$tmp/dist/BUILD-INFO"
    rm -rf "$bindir" # a directory without its binary (deleted by hand): replace it whole
    mv -T "$tmp/dist" "$bindir"
    rm -rf "$tmp/src" "$tmp/build"
    log "llama-server built in $((SECONDS - t0)) s ($(mb "$(filesize "$binary")")): $binary"
}

fetch_model() {
    need_pip
    local t0=$SECONDS
    [[ -f "$model_requirements" ]] || die "$model_requirements is missing"
    log "downloading the model $MODEL_NAME ($(mb "$MODEL_SIZE")) from PyPI as wheels" \
        "(pinned in $model_requirements)"
    pip download --no-deps --require-hashes --only-binary :all: \
        -r "$model_requirements" -d "$tmp/wheels" >&2 ||
        die "pip could not download the model's wheels listed in $model_requirements"
    log "downloaded $(mb "$(du -sb "$tmp/wheels" | cut -f1)") in $((SECONDS - t0)) s; joining the parts"
    "$PYTHON" - "$tmp/model.gguf" "$MODEL_SIZE" "$MODEL_SHA256" "$tmp"/wheels/*.whl <<'EOF' ||
import hashlib
import re
import sys
import zipfile

out, size, sha256, wheels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
# Each wheel holds one slice of the GGUF as <package>/data/partNN.bin; join them in NN order.
parts = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.fullmatch(r"[^/]+/data/part\d+\.bin", n)]
    if len(names) != 1:
        sys.exit(f"local-llm: {wheel}: expected one <package>/data/partNN.bin, found {names}")
    parts.append((int(re.search(r"(\d+)\.bin$", names[0]).group(1)), wheel, names[0]))
parts.sort()
if [n for n, _, _ in parts] != list(range(1, len(parts) + 1)):
    sys.exit(f"local-llm: the wheels hold parts {[n for n, _, _ in parts]}, not 1..{len(parts)}")
digest = hashlib.sha256()
total = 0
with open(out, "wb") as f:
    for n, wheel, name in parts:
        with zipfile.ZipFile(wheel) as z, z.open(name) as part:
            while chunk := part.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
                total += len(chunk)
        print(f"local-llm: part {n}/{len(parts)} joined, {total // 1000000} MB", file=sys.stderr)
if total != size or digest.hexdigest() != sha256:
    sys.exit(f"local-llm: the joined model has {total} bytes and sha256 {digest.hexdigest()};"
             f" expected {size} bytes and sha256 {sha256}")
EOF
        die "could not join the model's parts"
    rm -rf "$tmp/wheels"
    mkdir -p "$(dirname "$model")"
    mv -T "$tmp/model.gguf" "$model"
    log "model ready in $((SECONDS - t0)) s ($(mb "$MODEL_SIZE"), sha256 ok): $model"
}

print_paths() { printf 'binary=%s\nmodel=%s\n' "$binary" "$model"; }

# Everything runs from main, called on the script's last line: bash reads a script as it runs
# it, so editing or `git pull`ing the script under a running build would otherwise make bash
# execute from a shifted offset.
main() {
    mode=install
    case "${1:-}" in
    "") ;;
    --print-paths) mode=print ;;
    --check) mode=check ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (expected --print-paths, --check or nothing; see --help)" ;;
    esac
    [[ $# -le 1 ]] || die "one argument at most (see --help)"

    if [[ -n "${UNMUTE_CACHE_DIR:-}" ]]; then
        cache="$UNMUTE_CACHE_DIR"
    elif [[ -n "${HOME:-}" ]]; then
        cache="$HOME/.cache/unmute-trio"
    else
        die "neither UNMUTE_CACHE_DIR nor HOME is set: no place for the cache"
    fi
    [[ "$cache" == /* ]] || cache="$PWD/$cache"

    bindir="$cache/llama-server-$LLAMA_CPP_PYTHON_VERSION-$(cpu_key)"
    binary="$bindir/llama-server"
    model="$cache/models/$MODEL_NAME"

    case "$mode" in
    print)
        print_paths
        exit 0
        ;;
    check)
        [[ -x "$binary" && -f "$model" ]]
        exit
        ;;
    esac

    if [[ -x "$binary" && -f "$model" ]]; then
        print_paths
        exit 0
    fi

    started=$SECONDS
    mkdir -p "$cache/.tmp" || die "cannot create the cache directory $cache"
    # One run at a time per cache: a second `make run` waits instead of building twice.
    exec 9>"$cache/.local-llm.lock"
    if ! flock -n 9; then
        log "another scripts/local-llm.sh is filling $cache; waiting for it"
        flock 9
    fi
    # Whatever an earlier run left behind when it was killed; nobody else holds the lock.
    rm -rf "$cache"/.tmp/local-llm.*
    # The temporary directory lives inside the cache so the final `mv` is an atomic rename.
    tmp="$(mktemp -d "$cache/.tmp/local-llm.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT

    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$root/.venv/bin/python" ]]; then
            PYTHON="$root/.venv/bin/python"
        else
            PYTHON=python3
        fi
    fi

    [[ -x "$binary" ]] || build_server
    [[ -f "$model" ]] || fetch_model
    log "ready in $((SECONDS - started)) s"
    print_paths
}

main "$@"; exit # one line: bash has read it whole before main runs
