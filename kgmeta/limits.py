"""Resource limits: bounded file reads and memory estimates checked before allocating.

Every file kgmeta reads whole (configs, ontologies, class-mapping files) goes through
:func:`read_bounded`, which refuses special files (a FIFO would block for ever, ``/dev/zero``
never ends) and files over a size limit before reading, and never reads more than the limit even
when the size the file system reports is wrong (``/proc`` files report 0). Work whose memory can
be estimated from its arguments (images of a run, a rendered chunk, an npz array, a GNN) is
checked with :func:`check_memory` against :func:`available_memory` (the machine's available
memory, the process's ``RLIMIT_AS``/``RLIMIT_DATA`` head-room and the cgroup limit, whichever is
smallest) before anything is allocated, so a huge size is a one-line error instead of an
out-of-memory crash.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kgmeta.errors import KGMetaError

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

__all__ = ["available_memory", "check_memory", "check_regular_file", "check_yaml_depth", "format_bytes",
           "read_bounded"]

_CHUNK = 1 << 20


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units for messages: ``512 B``, ``3.0 MiB``, ``1.5 TiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    n = float(n)
    for unit in units:
        if abs(n) < 1024 or unit == units[-1]:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: Path, what: str, error: type[KGMetaError]) -> os.stat_result:
    """``os.stat`` of ``path`` after checking it is a regular file (folders raise
    IsADirectoryError, missing files FileNotFoundError, as ``open`` would; special files raise
    ``error``)."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise error(f"{path}: is {kind}, not a regular file; kgmeta reads {what} from regular "
                    f"files only: pass the file itself")
    return st


def read_bounded(path: str | os.PathLike[str], limit: int, what: str,
                 error: type[KGMetaError], fix: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises:
        error: ``path`` is a special file (device, FIFO, socket), or holds more than ``limit``
            bytes (checked from its size before reading and again while reading); the message
            names ``what`` the file should be and ends with ``fix``.
        OSError: as ``open`` raises it (missing file, folder, permission), for the caller to word.
    """
    path = Path(path)
    st = check_regular_file(path, what, error)
    if st.st_size > limit:
        raise error(f"{path}: is {format_bytes(st.st_size)}, more than the {format_bytes(limit)} "
                    f"kgmeta reads for {what}; {fix}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat above
            raise error(f"{path}: is not a regular file; kgmeta reads {what} from regular "
                        f"files only: pass the file itself")
        parts, total = [], 0
        while True:
            part = fh.read(min(_CHUNK, limit + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
            if total > limit:
                raise error(f"{path}: is more than the {format_bytes(limit)} kgmeta reads for "
                            f"{what}; {fix}")
    return b"".join(parts)


def check_yaml_depth(text: str, where: str, limit: int, fix: str, error: type[KGMetaError]) -> None:
    """Raise ``error`` when the YAML ``text`` nests mappings and lists more than ``limit`` levels
    deep. The parser's events are read without recursion, so this runs before PyYAML's recursive
    composer would overflow the stack; syntax errors are left to the real parse."""
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limit:
                    line = event.start_mark.line + 1 if event.start_mark else "?"
                    raise error(f"{where}: YAML nested more than {limit} levels deep (line "
                                f"{line}); {fix}")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmSize``, ``VmData``) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, as far as it can tell; ``None`` when unknown.

    The smallest of: the machine's available memory (``MemAvailable``), the head-room under the
    soft ``RLIMIT_AS`` and ``RLIMIT_DATA`` limits (``ulimit -v``), and the head-room under the
    cgroup v2 memory limit (containers)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    limits = () if resource is None else ((resource.RLIMIT_AS, "VmSize"),
                                          (resource.RLIMIT_DATA, "VmData"))
    for limit, field in limits:
        soft = resource.getrlimit(limit)[0]
        used = _status_bytes(field)
        if soft != resource.RLIM_INFINITY and used is not None:
            found.append(max(0, soft - used))
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cap is not None and used is not None:
        found.append(max(0, cap - used))
    return min(found) if found else None


def check_memory(need: int, what: str, fix: str, error: type[KGMetaError]) -> None:
    """Raise ``error`` when ``need`` bytes (an estimate of ``what``) exceed
    :func:`available_memory`; nothing is checked when the available memory is unknown."""
    have = available_memory()
    if have is not None and need > have:
        raise error(f"{what} needs about {format_bytes(need)} of memory but about "
                    f"{format_bytes(have)} is available; {fix}")
