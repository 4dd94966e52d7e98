"""Write files and directories so that readers see all of them or nothing of them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_directory(out: Path | str, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it is renamed to `out`.

    On any exception the temporary directory is removed and `out` is left as it was. With
    `overwrite`, an existing `out` is replaced only after the new one is complete.
    """
    out = Path(out)
    check_output_directory(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would survive the rename
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename `tmp` to `out`. Another process may have written `out` since the check before
    the work: without `overwrite` that is a FileExistsError (a rename never replaces a
    directory that has files), with it theirs is replaced, whatever the order of events."""
    for attempt in range(100):
        try:
            os.rename(tmp, out)
            return
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if not overwrite:
            raise FileExistsError(
                f"{out} already exists: another process wrote it meanwhile (pass --force to "
                "replace it)"
            )
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{attempt}")
        with contextlib.suppress(FileNotFoundError):  # another replacer may have moved it
            os.rename(out, old)
            shutil.rmtree(old)
    raise FileExistsError(f"{out}: other processes keep writing it")


@contextmanager
def directory_lock(path: Path | str, *, wait: bool, busy: str = "") -> Iterator[None]:
    """An exclusive lock on directory `path` (made if missing) while the block runs, released
    when it ends or the process dies (flock). `wait`: until another holder lets go; otherwise
    FileExistsError(`busy`). A directory this call made is removed again if left empty."""
    path = Path(path)
    refuse_non_directory(path)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise FileExistsError(busy or f"{path} is in use by another process") from None
        try:
            yield
        finally:
            if made:
                with contextlib.suppress(OSError):  # not empty: it is the output
                    path.rmdir()
    finally:
        os.close(handle)


def check_output_directory(out: Path | str, *, overwrite: bool) -> None:
    """FileExistsError if `out` exists and is not a directory (never replaced: a user's file),
    or exists and `overwrite` is off. Commands call it before their work, too."""
    out = Path(out)
    refuse_non_directory(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --force to replace it)")


def refuse_output_over_inputs(out: Path | str, inputs: list[Path | str | None]) -> None:
    """ValueError if an input (a file or directory the command reads) is `out` or inside it:
    `--force` replaces `out` whole, so it would delete the input. `tfds:` names and None are
    not paths and are skipped."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None or str(given).startswith("tfds:"):
            continue
        if Path(given).resolve().is_relative_to(target):
            raise ValueError(
                f"--out {out} holds the input {given}: replacing it would delete it; "
                "choose another output"
            )


def check_run_directory(run_dir: Path | str, *, resume: bool) -> None:
    """FileExistsError if `run_dir` exists and is not a directory, or holds a run and `resume`
    is off (a training run is continued on request, never replaced)."""
    run_dir = Path(run_dir)
    refuse_non_directory(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} already exists: pass --resume to continue it")


def refuse_non_directory(out: Path | str) -> None:
    """FileExistsError if something other than a directory (a file, a symbolic link that loops
    or leads nowhere) is at `out`: an output directory never replaces it."""
    out = Path(out)
    if (out.is_symlink() or out.exists()) and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory: choose another output")


def _umask() -> int:
    """This process's umask, read without changing it (os.umask sets one to read it, which
    another thread could see); 0o022 where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_npz_atomic(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` as an uncompressed .npz to `path` atomically (write_bytes_atomic)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (write_bytes_atomic)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling renamed over it: a reader, or a process
    killed halfway, sees the old content or the new, never part of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would survive the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
