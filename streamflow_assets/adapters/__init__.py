"""Where this project relies on other libraries' private details: one small module each.

Feast's online wire format, repository parsing and apply (`feast.py`), Great Expectations'
expectation internals (`gx.py`) and pgserver's internals (`pgserver.py`) are reached only from
these modules. Each states the versions it was written against and checks, on first use, that the
installed version is one of them and that the private details it needs are still there, so an
upgrade fails with a message naming the library instead of breaking a month silently.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.specifiers import SpecifierSet


class IncompatibleLibraryError(RuntimeError):
    """An installed library is outside the versions an adapter was written against, or a private
    detail it relies on has changed; the message names the library, the version and the detail."""


def require(distribution: str, supported: str, installed: str | None = None) -> str:
    """The installed version of `distribution`, if `supported` (a PEP 440 range) admits it."""
    installed = installed or version(distribution)
    if installed not in SpecifierSet(supported):
        raise IncompatibleLibraryError(
            f"{distribution} {installed} is installed, but streamflow_assets/adapters was "
            f"written against {distribution}{supported}: install a version in that range (see "
            "pyproject.toml), or review the adapter and widen its range"
        )
    return installed


def private_detail(distribution: str, detail: str, ok: bool) -> None:
    """Fail clearly when a private detail an adapter relies on is gone or has changed."""
    if not ok:
        raise IncompatibleLibraryError(
            f"{distribution} {version(distribution)}: {detail} has changed; the adapter in "
            "streamflow_assets/adapters must be updated for this version"
        )
