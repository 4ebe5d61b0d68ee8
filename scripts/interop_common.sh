# Shared by the interop_*.sh scripts (sourced, not run): their scratch folder, a venv holding a
# PyPI package, and the voltlens command.

# Scratch folder: $WORK, else a new temporary one.
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"

# ensure_venv VENV MODULE REQUIREMENT: makes VENV and pip-installs REQUIREMENT into it unless MODULE
# already imports there; says how long the install took; sets $python. With TORCH_VENV set, the
# new venv sees that venv's packages (torch), so pip does not fetch them again.
ensure_venv() {
    local venv=$1 module=$2 requirement=$3
    python="$venv/bin/python"
    if "$python" -c "import $module" 2>/dev/null; then
        return
    fi
    local start site
    start=$(date +%s)
    python3 -m venv "$venv"
    if [ -n "${TORCH_VENV:-}" ]; then
        site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        "$TORCH_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/voltlens-torch.pth"
    fi
    "$venv/bin/pip" install -q "$requirement"
    echo "installed $requirement into $venv in $(( $(date +%s) - start )) s"
}

# voltlens ARGS…: the binary in $VOLTLENS, else `cargo run` of this checkout.
voltlens() {
    if [ -n "${VOLTLENS:-}" ]; then
        "$VOLTLENS" "$@"
    else
        cargo run -q --manifest-path "$root/Cargo.toml" -- "$@"
    fi
}
