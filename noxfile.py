"""Sessions: tests (default), compare, lint, proto."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on real loopback sockets."""
    session.install("-e", ".[test,experiments]")
    # Two workers: most tests wait on timers and sockets. Tests marked
    # xdist_group("cpu-heavy") run one after another on one worker. `-n 0` runs serially.
    session.run("pytest", "-n", "2", "--dist", "loadgroup", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and mypy --strict on the packages."""
    session.install("-e", ".[test,lint,experiments]")
    session.run("ruff", "check", ".")
    session.run("mypy", "model", "transports", "experiments", "tests", "noxfile.py")


@nox.session
def compare(session: nox.Session) -> None:
    """Run every transport side by side and write results.json, report.md and plots."""
    session.install("-e", ".[experiments]")
    session.run("python", "-m", "experiments", *session.posargs)


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate transports/proto's Python modules from transportbench.proto."""
    # The versions pinned in pyproject's test extra: tests/test_grpc.py compares against them.
    session.install("grpcio-tools==1.85.1", "mypy-protobuf==5.1.0")
    session.run("python", "-m", "transports.proto.regenerate")
