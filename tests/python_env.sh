# Sourced by the test scripts: HSPMN_PYTHON = a Python 3 with h5py and numpy.
# Debian's packages live in /usr/bin/python3; elsewhere (e.g. a GPU machine with its own
# Python) the python3 on PATH may be the one that has them. Empty when none has.
if [ -z "${HSPMN_PYTHON:-}" ]; then
    for candidate in /usr/bin/python3 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import h5py, numpy' >/dev/null 2>&1; then
            HSPMN_PYTHON=$(command -v "$candidate")
            break
        fi
    done
fi
export HSPMN_PYTHON=${HSPMN_PYTHON:-}

# Tests that read HDF5 files call this first: without h5py they cannot check anything.
need_python() {
    if [ -z "$HSPMN_PYTHON" ]; then
        echo "SKIP: no python3 with h5py and numpy (apt-get install python3-h5py python3-numpy)"
        exit 77
    fi
}
