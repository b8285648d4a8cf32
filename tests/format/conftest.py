"""Fixtures for the format-conformance suite: the packstore command-line tool.

The tool is found through the PACKSTORE_CLI environment variable. A test that
needs it fails, with a message saying how to set it, when the variable is
unset or does not name an executable file.
"""

import json
import os
import subprocess

import pytest

CLI_TIMEOUT_SECONDS = 120


class EngineError(AssertionError):
    """A packstore command did not exit as the test expected."""


class Engine:
    """Runs `packstore --store DIR ...` for one container folder."""

    def __init__(self, cli, store):
        self.cli = cli
        self.store = str(store)

    def run(self, *args, stdin=None, expect_rc=0):
        """Run one command; EngineError unless it exits with ``expect_rc``.

        ``expect_rc`` None accepts any exit code. Returns the CompletedProcess
        with stdout as bytes and stderr as text.
        """
        argv = [self.cli, "--store", self.store, *[str(arg) for arg in args]]
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
        result.stderr = result.stderr.decode("utf-8", "replace")
        if expect_rc is not None and result.returncode != expect_rc:
            shown = " ".join(argv[3:])
            if len(shown) > 300:
                shown = shown[:300] + " ..."
            raise EngineError(
                f"`packstore {shown}` exited {result.returncode}, expected {expect_rc}\n"
                f"stderr: {result.stderr.strip()}\n"
                f"stdout: {result.stdout[:2000]!r}"
            )
        return result

    def text(self, *args, **kwargs):
        """Run a command and return its stdout as text."""
        return self.run(*args, **kwargs).stdout.decode("utf-8")

    def init(self, *options):
        """`init` with options such as ("--loose-prefix-len", 0)."""
        return self.run("init", *options)

    def put(self, paths, *options, stdin=None):
        """`put`; returns the keys printed, in the order of ``paths``."""
        out = self.text("put", *options, *paths, stdin=stdin)
        pairs = [line.split("  ", 1) for line in out.splitlines() if line]
        if [path for _, path in pairs] != [str(path) for path in paths]:
            raise EngineError(f"put printed {out!r} for paths {paths!r}")
        return [key for key, _ in pairs]

    def cat(self, key):
        """`cat KEY` stdout as bytes."""
        return self.run("cat", key).stdout

    def ls(self):
        """`ls` as a list of keys."""
        return self.text("ls").split()

    def has(self, *keys):
        """`has` as {key: bool}."""
        answer = {}
        for line in self.text("has", *keys).splitlines():
            key, verdict = line.split()
            answer[key] = {"yes": True, "no": False}[verdict]
        return answer

    def stat(self, *keys):
        """`stat` as {key: {field: value}}; numeric fields as int."""
        answer = {}
        for line in self.text("stat", *keys).splitlines():
            key, *fields = line.split()
            parsed = dict(field.split("=", 1) for field in fields)
            for name in ("size", "pack", "offset", "length", "compressed"):
                if name in parsed:
                    parsed[name] = int(parsed[name])
            answer[key] = parsed
        return answer

    def status(self):
        """`status --json` parsed."""
        return json.loads(self.text("status", "--json"))


@pytest.fixture(scope="session")
def packstore_cli():
    """Absolute path of the packstore tool under test."""
    cli = os.environ.get("PACKSTORE_CLI")
    if not cli:
        pytest.fail(
            "PACKSTORE_CLI is not set: point it at the packstore command-line tool, "
            "e.g. PACKSTORE_CLI=/path/to/packstore python3 -m pytest tests/format",
            pytrace=False,
        )
    cli = os.path.abspath(cli)
    if not (os.path.isfile(cli) and os.access(cli, os.X_OK)):
        pytest.fail(f"PACKSTORE_CLI={cli} is not an executable file", pytrace=False)
    return cli


@pytest.fixture
def engine(packstore_cli, tmp_path):
    """An Engine on a not-yet-created container folder tmp_path/store."""
    return Engine(packstore_cli, tmp_path / "store")


@pytest.fixture(scope="session")
def make_engine(packstore_cli):
    """Factory: make_engine(folder) -> Engine on that folder."""
    return lambda store: Engine(packstore_cli, store)
