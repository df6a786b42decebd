"""The install contract: what ``make install`` puts into ``.venv`` is exactly the lock.

Files, at the repository root (see docs/development.md):

- ``requirements.lock``: every package with its version and SHA-256 hashes, resolved by
  ``make lock`` (uv) from ``pyproject.toml``, ``lock/tools.in`` and ``lock/constraints.txt``;
- ``requirements-nodeps.lock``: packages that hold only weights, installed with ``--no-deps``
  (their metadata pins ancient versions of packages the first lock already has);
- ``lock/inputs.sha256``: the digest of the lock's inputs when the lock was last made, so
  ``make check`` can tell a ``pyproject.toml`` whose dependencies moved without ``make lock``.

This module reads those files and compares them with what is installed; it imports nothing
beyond the standard library, so ``make install`` can run it before anything else works::

    python -m engine.lockfile check-inputs   # exit 1: pyproject changed, lock not regenerated
    python -m engine.lockfile stamp          # write lock/inputs.sha256 (``make lock`` does)
    python -m engine.lockfile check-installed   # exit 1: installed versions differ from the lock
    python -m engine.lockfile sync           # uninstall what the lock does not list
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILES = ("requirements.lock", "requirements-nodeps.lock")
INPUT_FILES = ("lock/constraints.txt", "lock/tools.in", "lock/nodeps.in", "lock/label-studio.in")
DIGEST_FILE = "lock/inputs.sha256"
# The project itself is installed editable from the checkout, not from the lock.
OWN_DISTRIBUTION = "fld-engine"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Foo_Bar.baz`` and ``foo-bar-baz`` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of a lock file."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def locked_versions(root: Path = ROOT) -> dict[str, str]:
    """Every package the lock files pin (empty when the checkout has no lock: an install
    of the package beside a user's own stack, which only pyproject's ranges govern)."""
    pins: dict[str, str] = {}
    for name in LOCK_FILES:
        if (root / name).is_file():
            pins.update(read_lock(root / name))
    return pins


def inputs_digest(root: Path = ROOT) -> str:
    """SHA-256 of what the lock is resolved from: pyproject's dependency lists (not its
    tool settings, so editing ruff's config asks for no new lock) and the files in lock/."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    resolved_from = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "files": {name: (root / name).read_text() for name in INPUT_FILES},
    }
    return hashlib.sha256(json.dumps(resolved_from, sort_keys=True).encode()).hexdigest()


def stale_inputs_message(root: Path = ROOT) -> str | None:
    """A sentence when the lock was not regenerated after its inputs changed, else None."""
    digest_path = root / DIGEST_FILE
    recorded = digest_path.read_text().strip() if digest_path.is_file() else ""
    if recorded == inputs_digest(root):
        return None
    return (
        "pyproject.toml's dependencies or the files in lock/ changed since requirements.lock "
        "was made: run `make lock`, then `make test`, and commit both."
    )


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of the distributions pip installed into this
    environment: its site-packages only, not whatever ``sys.path`` holds (Ray puts its
    vendored ``thirdparty_files`` there, which pip neither installed nor can remove)."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {
        canonical_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=paths)
        if dist.metadata["Name"]
    }


def installed_differences(
    locked: dict[str, str], installed: dict[str, str]
) -> tuple[list[str], list[str]]:
    """``(problems, extra)``: one sentence per locked package that is missing or at another
    version, and the names installed that the lock does not list (the project excepted)."""
    problems = []
    for name, version in sorted(locked.items()):
        if name not in installed:
            problems.append(f"{name} {version} is locked but not installed")
        elif installed[name] != version:
            problems.append(f"{name} is {installed[name]}, the lock says {version}")
    extra = sorted(set(installed) - set(locked) - {OWN_DISTRIBUTION})
    return problems, extra


def main(argv: list[str] | None = None) -> int:
    command = (argv or sys.argv[1:] or [""])[0]
    if command == "stamp":
        (ROOT / DIGEST_FILE).write_text(inputs_digest() + "\n")
        return 0
    if command == "check-inputs":
        message = stale_inputs_message()
        if message:
            print(message, file=sys.stderr)
        return 1 if message else 0
    locked = locked_versions()
    problems, extra = installed_differences(locked, installed_versions())
    if command == "check-installed":
        for line in problems + [f"{name} is installed but not in the lock" for name in extra]:
            print(line, file=sys.stderr)
        return 1 if problems or extra else 0
    if command == "sync":
        if extra:  # what an older lock installed and this one dropped
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *extra], check=True)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    print("usage: python -m engine.lockfile stamp|check-inputs|check-installed|sync")
    return 2


if __name__ == "__main__":
    sys.exit(main())
