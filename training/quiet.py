"""Quiet logs for the `curator` command: drop TensorFlow's known noise, keep everything else.

Every command used to print the same harmless lines: CUDA's `failed call to cuInit` on a
machine without a GPU, oneDNN's `supports DT_INT64 only on platforms with AVX-512`, Keras's
"`__init__()` arguments contain non-serializable objects" once per saved tower, and with
`--workers` abseil's "All log messages before absl::InitializeLog()" notice and each worker's
"Started server with target: grpc://..." line. `quiet()`
removes exactly those and nothing else; `verbose()` (`curator --verbose`) keeps every log and
lowers TensorFlow's C++ log level to show its INFO lines too.

Both must run before TensorFlow is first imported: the C++ log level is read once, at the
first log line. The `curator` commands import TensorFlow lazily, inside the command, after the
app's callback has called one of these. A `TF_CPP_MIN_LOG_LEVEL` the user set is left as it is
(`towers` sets the project default, 2: warnings and errors only); at 0 or 1 the C++ lines are
not filtered. On a machine with an NVIDIA GPU a failing cuInit is a real error and is shown.
`TF_ENABLE_ONEDNN_OPTS` and `CUDA_VISIBLE_DEVICES` are never touched: only what is printed.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import os
import subprocess
import sys

DEFAULT_TF_LEVEL = "2"  # what `towers` sets when the user did not
KERAS_NOISE = "arguments contain non-serializable objects"

# TensorFlow's C++ log lines ("2026-01-31 12:00:00.123456: E file.cc:51] message") and the
# abseil ones some builds print ("E0000 00:00:1700000000.123456  1234 file.cc:51] message").
_PREFIX = r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EW] |[EW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ )\S+\] "
ONEDNN_NOISE = _PREFIX + r"oneDNN supports DT_INT64 only on platforms with AVX-512"
CUINIT_NOISE = _PREFIX + r"failed call to cuInit"
# `--workers`: each worker's gRPC server announces itself at INFO level through abseil, which
# TF_CPP_MIN_LOG_LEVEL does not reach, after abseil's notice that it logs to stderr
GRPC_NOISE = (
    r"I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ grpc_server_lib\.cc:\d+\] Started server with target: "
)
ABSL_NOTICE = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
)

# The filter runs in its own process: after an abort (a C++ CHECK failure, a segfault) it still
# forwards the last lines, where a thread in the dying process could lose them. Lines are
# forwarded as they come; a partial line waits for its end at most 0.2 s.
_FILTER = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise = re.compile(sys.argv[1].encode())
pending = b""
def emit(data):
    while data:
        data = data[os.write(1, data):]
while True:
    if pending and not select.select([0], [], [], 0.2)[0]:
        emit(pending)
        pending = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        emit(pending)
        break
    *lines, pending = (pending + chunk).split(b"\n")
    emit(b"".join(line + b"\n" for line in lines if not noise.match(line)))
"""


class _DropKerasNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return KERAS_NOISE not in record.getMessage()


_installed: list[object] = []  # what quiet() set up; at most once per process


def quiet() -> None:
    """Drop the known noise (see the module docstring); call before importing TensorFlow."""
    if _installed:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LEVEL)
    keras_filter = _DropKerasNoise()
    logging.getLogger("tensorflow").addFilter(keras_filter)  # tf_keras logs through it
    _installed.append(keras_filter)
    if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("0", "1"):
        return  # the user asked for TensorFlow's INFO lines: show them all, noise included
    patterns = [ONEDNN_NOISE, GRPC_NOISE, ABSL_NOTICE]
    if not glob.glob("/dev/nvidia[0-9]*"):  # no NVIDIA GPU here: cuInit failing is expected
        patterns.append(CUINIT_NOISE)
    _filter_native_stderr("|".join(f"(?:{p})" for p in patterns))


def verbose() -> None:
    """Keep every log: TensorFlow's INFO lines too, unless the user set the level."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LEVEL) == DEFAULT_TF_LEVEL:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def _filter_native_stderr(pattern: str) -> None:
    """Send what C/C++ code writes to file descriptor 2 through a line filter.

    Python's own `sys.stderr` moves to a copy of the original descriptor, so tracebacks,
    progress bars and `typer` messages bypass the filter (and still see a terminal).
    Skipped where stderr was already redirected inside Python (pytest, an embedding program).
    """
    if os.name != "posix" or sys.stderr is None or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):
        return
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, pattern],
            stdin=read_end,
            stdout=original,
            start_new_session=True,  # Ctrl-C stops curator, not the filter (it ends at EOF)
        )
    except OSError:
        os.close(read_end)
        os.close(write_end)
        os.close(original)
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    stderr = sys.stderr
    sys.stderr = open(  # noqa: SIM115  (lives as long as the process)
        original,
        "w",
        encoding=stderr.encoding,
        errors=stderr.errors,
        buffering=1,
        closefd=False,
    )
    _installed.append(process)

    def restore() -> None:
        """At exit: fd 2 back to the original (the filter sees EOF), wait for its last lines."""
        sys.stderr.flush()
        os.dup2(original, 2)
        # A child process may still hold the pipe; then the filter ends when that child does.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)

    atexit.register(restore)
