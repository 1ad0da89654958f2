"""The mahimahi link: Mahimahi's own ``mm-delay`` and ``mm-link`` shells, as Pensieve ran them.

The command line is ``mm-delay D mm-link UPLINK DOWNLINK [queue options] -- sh -c ... COMMAND``:
mm-delay outside (D ms each way), mm-link inside, both traces in Mahimahi format (1504 bytes per
listed millisecond; the trace repeats). A bounded queue becomes mm-link's ``droptail`` queue on
both directions. The small ``sh -c`` wrapper exports ``$STREAMBED_HOST`` as mm-link's
``$MAHIMAHI_BASE`` (the host as seen from inside), runs the command and writes its exit status
to a file: mm-link turns every non-zero status into 1, so the driver reads the real one there.

Mahimahi's tools refuse to run as root (they check the real uid; their privileges come from the
setuid bit). As root, Streambed runs them as an unprivileged user (``$STREAMBED_MAHIMAHI_USER``,
default ``streambed`` when that user exists, else ``nobody``) through ``setpriv``; that user must
be able to execute the Python interpreter and read the package, which is checked up front.

Mahimahi is Ubuntu's ``mahimahi`` package (in Streambed's Docker image) or
``scripts/install-mahimahi.sh``; it is not a Python dependency, so ``require_mahimahi`` says
clearly when it is absent. It also needs ``net.ipv4.ip_forward=1``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streambed.core.errors import ConfigError

TOOLS = ("mm-delay", "mm-link")
USER_ENV = "STREAMBED_MAHIMAHI_USER"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# POSIX sh: export the base address under Streambed's name, run the command, keep its status
# ($1 is the status file; mm-link would report 1 for any failure).
_WRAPPER = (
    'STREAMBED_HOST="${MAHIMAHI_BASE:-$STREAMBED_HOST}"; export STREAMBED_HOST; '
    'f="$1"; shift; "$@"; s=$?; echo "$s" > "$f"; exit "$s"'
)


def mahimahi_missing() -> list[str]:
    """The Mahimahi programs not found on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def run_as_root() -> bool:
    """True when the mm shells must be started as another user (this process's real uid is 0)."""
    return os.getuid() == 0


def run_user() -> pwd.struct_passwd:
    """The unprivileged user the mm shells run as when Streambed runs as root."""
    name = os.environ.get(USER_ENV)
    if not name:
        name = "nobody"
        try:
            pwd.getpwnam("streambed")
            name = "streambed"
        except KeyError:
            pass
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"{USER_ENV}={name!r}: no such user (the mahimahi link runs Mahimahi as this "
            "unprivileged user when Streambed runs as root)"
        ) from None
    if user.pw_uid == 0:
        raise ConfigError(f"{USER_ENV}={name!r}: must be an unprivileged user, not uid 0")
    return user


def user_argv(user: pwd.struct_passwd) -> list[str]:
    """The prefix that runs a command as ``user`` (environment kept, supplementary groups set)."""
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
    ]


def _blocked(path: Path, user: pwd.struct_passwd, groups: set[int], final: int) -> Path | None:
    """The first of ``path`` and its parents that ``user`` cannot search (or, for ``path``
    itself, use with permission bits ``final``: 1 execute, 4 read)."""
    parts = [*reversed(path.parents), path]
    for part in parts:
        try:
            st = part.stat()
        except OSError:
            return part
        want = final if part == path else 1
        if st.st_uid == user.pw_uid:
            bits = st.st_mode >> 6
        elif st.st_gid in groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        if bits & want != want:
            return part
        if part != path and not stat.S_ISDIR(st.st_mode):
            return part
    return None


@functools.lru_cache(maxsize=8)
def _check_user_access(name: str, program: str, python: str) -> None:
    user = pwd.getpwnam(name)
    groups = set(os.getgrouplist(name, user.pw_gid))
    checks = [(Path(program).absolute(), 1), (Path(program).resolve(), 1)]
    is_python = Path(program).resolve() == Path(python).resolve()
    if is_python:
        import streambed

        checks.append((Path(streambed.__file__).resolve().parent, 5))
    for path, bits in checks:
        blocked = _blocked(path, user, groups, bits)
        if blocked is not None:
            raise ConfigError(
                f"the mahimahi link runs the command as user {name!r} (Mahimahi refuses root), "
                f"who cannot reach {path} ({blocked} is not accessible to it): use a Python and "
                "a checkout that user can read (e.g. a .venv made from /usr/bin/python3 outside "
                f"/root: scripts/setup.sh --dev), or set {USER_ENV} to a user who can"
            )
    if not is_python:
        return
    code = "import streambed.emulation.link, streambed.commands.play"
    result = subprocess.run(
        [*user_argv(user), python, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ConfigError(
            f"the mahimahi link runs the command as user {name!r}, who cannot import streambed "
            f"with {python}: {lines[-1] if lines else result.returncode}; make the virtualenv "
            f"and the checkout readable by {name!r}, or set {USER_ENV} to a user who can"
        )


def check_command(program: str, python: str = sys.executable) -> None:
    """As root: raise ``ConfigError`` unless the Mahimahi user can execute ``program`` (and,
    when it is this Python, import streambed with it)."""
    if run_as_root():
        found = shutil.which(program) or program
        _check_user_access(run_user().pw_name, found, python)


def require_mahimahi(allow_root: bool = True) -> None:
    """Raise ``ConfigError`` saying why the mahimahi link cannot run here.

    ``allow_root=False`` (``auto``) refuses root outright instead of switching users.
    """
    missing = mahimahi_missing()
    if missing:
        raise ConfigError(
            f"the mahimahi link needs {' and '.join(missing)} on PATH, not found; install "
            "Mahimahi (Ubuntu: apt-get install mahimahi; else scripts/install-mahimahi.sh) or "
            "use --kind netns (root) or --kind proxy"
        )
    if run_as_root():
        if not allow_root:
            # "auto" as root prefers netns to switching users.
            raise ConfigError(
                "the mahimahi link is not chosen automatically as root: use --kind mahimahi "
                f"(runs Mahimahi as {USER_ENV}) or --kind netns"
            )
        if shutil.which("setpriv") is None:
            raise ConfigError(
                "the mahimahi link as root needs setpriv (util-linux) to run Mahimahi as an "
                "unprivileged user"
            )
        run_user()
    try:
        forward = IP_FORWARD.read_text().strip()
    except OSError:
        forward = "1"  # not Linux's /proc: let Mahimahi say
    if forward != "1":
        raise ConfigError(
            "the mahimahi link needs IP forwarding: run `sysctl -w net.ipv4.ip_forward=1` as "
            "root (scripts/setup.sh --dev does), or use --kind netns or --kind proxy"
        )


def readable_python(system: Path = Path("/usr/bin/python3")) -> str:
    """An interpreter the Mahimahi user can run that imports this process's packages: this one
    when the user can run it, else a venv of ``system`` (e.g. Debian's, when this interpreter
    lives in a mode-700 /root) under /tmp whose site-packages path points at this one's (same
    minor version), made once per environment and readable by everyone."""
    if not run_as_root():
        return sys.executable
    try:
        check_command(sys.executable)
        return sys.executable
    except ConfigError as exc:
        reason = str(exc)
    if not system.exists():
        raise ConfigError(f"{reason}; and no {system} to make a readable venv from")
    site = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.prefix}{site}".encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"streambed-mm-venv-{key}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "streambed-dev.pth").write_text(
            f"import site; site.addsitedir({site!r})\n"
        )
        for path in [venv, *venv.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | 0o055 if path.is_dir() else mode | 0o044)
    return str(python)


def grant(path: Path) -> None:
    """Let the mm shells' user write ``path`` (a directory the command writes into) when
    Streambed runs as root; nothing otherwise."""
    if run_as_root():
        user = run_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _format_delay(delay_ms: float) -> str:
    if delay_ms != int(delay_ms):
        raise ConfigError(f"delay_ms={delay_ms}: mm-delay takes whole milliseconds")
    return str(int(delay_ms))


def mahimahi_argv(
    argv: Sequence[str],
    downlink_mm: str,
    uplink_mm: str,
    delay_ms: float = 0.0,
    queue_packets: int | None = None,
    queue_bytes: int | None = None,
    status_file: str = "/dev/null",
    downlink_log: str | None = None,
) -> list[str]:
    """The full command line that runs ``argv`` behind mm-delay and mm-link; the command's
    exit status is written to ``status_file``; ``downlink_log``: mm-link's ``--downlink-log``
    (its per-packet record of the downlink, read by ``streambed.reports.delivery``)."""
    queue: list[str] = []
    if downlink_log is not None:
        queue.append(f"--downlink-log={downlink_log}")
    if queue_packets is not None or queue_bytes is not None:
        args = ",".join(
            f"{key}={value}"
            for key, value in (("packets", queue_packets), ("bytes", queue_bytes))
            if value is not None
        )
        for direction in ("uplink", "downlink"):
            queue += [f"--{direction}-queue=droptail", f"--{direction}-queue-args={args}"]
    return [
        "mm-delay",
        _format_delay(delay_ms),
        "mm-link",
        uplink_mm,
        downlink_mm,
        *queue,
        "--",
        "sh",
        "-c",
        _WRAPPER,
        "streambed-link",
        status_file,
        *argv,
    ]
