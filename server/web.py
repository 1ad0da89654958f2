"""Where the dash.js player's files are: one answer for the origin and for ``play --browser``.

The page, the rule and the Node.js driver ship in the package (``streambed/player/web``, with
the pinned ``package.json`` and ``package-lock.json``), but their npm packages (dash.js, BSD-3,
and playwright-core, which the driver imports) do not. In a checkout ``scripts/setup.sh`` runs
``npm ci`` in that folder. From an installed wheel the package's folder may not be writable, so
``streambed play --install-browser`` (:func:`install_web`) copies the shipped files to a
user-writable folder (:func:`installed_web_dir`) and runs ``npm ci`` there against the shipped
lockfile; it marks the folder with this version and a digest of the shipped files.

:func:`resolve_web_dir` picks the folder used: the package's own when it has the npm packages
(a checkout), else the installed copy when it is complete and made from these very files, else
a ``ConfigError`` naming the command to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from streambed import __version__
from streambed.core.errors import ConfigError

PACKAGE_WEB_DIR = Path(str(files("streambed.player") / "web"))
"""The shipped page, rule, driver and lockfile (``player/web``)."""
WEB_DIR_ENV = "STREAMBED_WEB_DIR"
INSTALL_COMMAND = "streambed play --install-browser"
NODE_PACKAGES = ("dashjs", "playwright-core")
"""The npm packages the page (dash.js) and the driver (playwright-core) need."""
SHIPPED_SUFFIXES = (".html", ".js", ".mjs")
SHIPPED_NAMES = ("package.json", "package-lock.json")
STAMP = ".streambed-web.json"
"""In an installed copy: the version and the digest of the shipped files it was made from."""
NPM_CI = ("ci", "--ignore-scripts", "--no-audit", "--no-fund")
"""No install scripts: nothing is downloaded but the locked packages (the system's Chromium is
driven, not one of Playwright's)."""
NPM_TIMEOUT_S = 900.0


PLAYER_PAGE = "player.html"
PLAYER_ASSETS = "/_streambed"
DASHJS_FILE = "node_modules/dashjs/dist/modern/umd/dash.all.min.js"
_JS = "text/javascript; charset=utf-8"
PLAYER_FILES: dict[str, tuple[str, str]] = {
    "dash.all.min.js": (DASHJS_FILE, _JS),
    "streambed-abr.js": ("streambed-abr.js", _JS),
    "streambed-player.js": ("streambed-player.js", _JS),
    "streambed-decide-worker.js": ("streambed-decide-worker.js", _JS),
}
DECIDE_WORKER = "streambed-decide-worker.js"
"""``/_streambed/<name>`` -> (file under the web directory, media type): the only files served
from there."""
ISOLATED = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
ISOLATED_FILES = {PLAYER_PAGE, DECIDE_WORKER}


def page_files(web: Path) -> dict[str, dict[str, object]]:
    """URL path -> the file, media type and headers the origin serves there for the player page
    (``/player.html`` and ``/_streambed/<name>``). ``play --browser`` hands this to its driver,
    which serves the page itself on loopback, so that only the session's own requests (MPD,
    segments, decisions) cross the link."""
    table: dict[str, dict[str, object]] = {
        f"/{PLAYER_PAGE}": {
            "file": str(web / PLAYER_PAGE),
            "type": "text/html; charset=utf-8",
            "headers": ISOLATED,
        }
    }
    for name, (relative, media_type) in PLAYER_FILES.items():
        table[f"{PLAYER_ASSETS}/{name}"] = {
            "file": str(web / relative),
            "type": media_type,
            "headers": ISOLATED if name in ISOLATED_FILES else {},
        }
    return table


def shipped_files(web: Path | None = None) -> list[Path]:
    """The files of ``web`` (default :data:`PACKAGE_WEB_DIR`) that the wheel ships
    (pyproject's package-data), sorted."""
    web = PACKAGE_WEB_DIR if web is None else web
    return sorted(
        p
        for p in web.iterdir()
        if p.is_file() and (p.suffix in SHIPPED_SUFFIXES or p.name in SHIPPED_NAMES)
    )


def shipped_digest(web: Path | None = None) -> str:
    """sha256 over the shipped files' names and bytes."""
    digest = hashlib.sha256()
    for path in shipped_files(web):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def installed_web_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``streambed play --install-browser`` installs: ``$STREAMBED_WEB_DIR``, else
    ``web-VERSION`` in ``$XDG_CACHE_HOME/streambed`` (default ``~/.cache/streambed``)."""
    env = os.environ if env is None else env
    chosen = env.get(WEB_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "streambed" / f"web-{__version__}"


def has_node_packages(web: Path) -> bool:
    return all((web / "node_modules" / p / "package.json").is_file() for p in NODE_PACKAGES)


def _stamp(web: Path) -> dict[str, str] | None:
    try:
        found = json.loads((web / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def resolve_web_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder the player's files are served and driven from (see the module docstring);
    ``ConfigError`` naming :data:`INSTALL_COMMAND` when there is none."""
    package = PACKAGE_WEB_DIR
    if has_node_packages(package):
        return package
    installed = installed_web_dir(env)
    stamp = _stamp(installed)
    if stamp is None or not has_node_packages(installed):
        why = "not installed"
    elif stamp.get("version") != __version__ or stamp.get("digest") != shipped_digest():
        why = f"installed for another streambed ({stamp.get('version')}) or other files"
    else:
        return installed
    raise ConfigError(
        f"the dash.js player's npm packages ({', '.join(NODE_PACKAGES)}) are in neither "
        f"{package / 'node_modules'} nor {installed} ({why}): run {INSTALL_COMMAND} "
        f"(${WEB_DIR_ENV} picks its folder), or scripts/setup.sh in a checkout"
    )


def find_web_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """:func:`resolve_web_dir`, or None when there is none."""
    try:
        return resolve_web_dir(env)
    except ConfigError:
        return None


def install_web(
    target: Path | None = None, npm: str = "npm", env: Mapping[str, str] | None = None
) -> Path:
    """Copy the shipped files to ``target`` (default :func:`installed_web_dir`) and ``npm ci``
    there against the shipped lockfile (npm's own settings apply: ``npm_config_*`` in the
    environment, ``~/.npmrc``); returns the folder. npm's output goes to this process's
    stdout/stderr. ``ConfigError`` when npm is missing or fails, or the folder is not writable."""
    target = installed_web_dir(env) if target is None else target
    found_npm = shutil.which(npm)
    if found_npm is None:
        raise ConfigError(
            f"{INSTALL_COMMAND} needs npm ({npm!r} is not on PATH): install Node.js and npm "
            "(e.g. apt-get install nodejs npm)"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        (target / STAMP).unlink(missing_ok=True)  # incomplete until npm ci has succeeded
        for path in shipped_files():
            shutil.copyfile(path, target / path.name)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot install the player's files there: {exc}") from None
    try:
        done = subprocess.run(
            [found_npm, *NPM_CI], cwd=target, stdin=subprocess.DEVNULL, timeout=NPM_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"npm ci in {target} took over {NPM_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not has_node_packages(target):
        raise ConfigError(
            f"npm ci in {target} failed (exit {done.returncode}; its output is above)"
        )
    stamp = {"version": __version__, "digest": shipped_digest()}
    try:
        (target / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{target / STAMP}: cannot write it: {exc}") from None
    return target


__all__ = [
    "INSTALL_COMMAND",
    "NODE_PACKAGES",
    "PACKAGE_WEB_DIR",
    "WEB_DIR_ENV",
    "find_web_dir",
    "install_web",
    "installed_web_dir",
    "resolve_web_dir",
]
