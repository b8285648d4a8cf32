"""Shared by the command-line tool suite: runs the packstore tool, in
daemon mode (a socket) or folder mode (--store), and parses what it prints."""

import os
import subprocess

TOOL_TIMEOUT = 120
# The peer other than root that access tests act as (setpriv).
OTHER_UID = 65534
OTHER_GID = 65534


class ToolError(AssertionError):
    """A packstore command did not exit as the test expected."""


class Tool:
    """Runs `packstore ...` against packstored on `socket`, or on the store
    folder `store` (--store) when given."""

    def __init__(self, binary, socket=None, store=None):
        self.binary = str(binary)
        self.socket = str(socket) if socket else None
        self.store = str(store) if store else None

    def argv(self, args):
        argv = [self.binary]
        if self.store:
            argv += ["--store", self.store]
        return argv + [str(arg) for arg in args]

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PACKSTORE_SOCKET", "PACKSTORE_STORE")}
        if self.socket:
            env["PACKSTORE_SOCKET"] = self.socket
        return env

    def run(self, *args, stdin=None, expect_rc=0, as_other=False, stderr=None, cwd=None,
            timeout=TOOL_TIMEOUT):
        """One command; ToolError unless it exits with `expect_rc` (None: any).

        Returns the CompletedProcess, stdout as bytes and stderr as text.
        `as_other` runs it as uid/gid 65534 without supplementary groups;
        `stderr` redirects stderr (a terminal, say) instead of capturing it.
        """
        argv = self.argv(args)
        if as_other:
            argv = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_GID}",
                    "--clear-groups"] + argv
        result = subprocess.run(
            argv, input=stdin, stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.PIPE,
            env=self.env(), timeout=timeout, check=False, cwd=cwd or "/")
        result.stderr = (result.stderr or b"").decode("utf-8", "replace")
        if expect_rc is not None and result.returncode != expect_rc:
            shown = " ".join(str(arg) for arg in args)
            raise ToolError(
                f"`packstore {shown[:300]}` exited {result.returncode}, expected {expect_rc}\n"
                f"stderr: {result.stderr.strip()}\nstdout: {result.stdout[:2000]!r}")
        return result

    def text(self, *args, **kwargs):
        return self.run(*args, **kwargs).stdout.decode("utf-8")

    def put(self, *paths_and_options, stdin=None):
        """`put`; {printed path: key}."""
        out = self.text("put", *paths_and_options, stdin=stdin)
        return {path: key for key, path in (line.split("  ", 1) for line in out.splitlines())}

    def has(self, *keys, expect_rc=None):
        answer = {}
        for line in self.text("has", *keys, expect_rc=expect_rc).splitlines():
            key, verdict = line.split()
            answer[key] = {"yes": True, "no": False}[verdict]
        return answer

    def stat(self, *keys, expect_rc=0):
        answer = {}
        for line in self.text("stat", *keys, expect_rc=expect_rc).splitlines():
            key, *fields = line.split()
            answer[key] = dict(field.split("=", 1) for field in fields) if fields[0] != "missing" \
                else None
        return answer

    def ls(self):
        return self.text("ls").split()

    def cat(self, *keys):
        return self.run("cat", *keys).stdout
