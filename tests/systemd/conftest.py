"""Fixtures for the systemd suite: a short temporary folder, notification
sockets, and daemons that are always stopped (or killed) at teardown."""

import shutil

import pytest

import systemd_harness as harness


@pytest.fixture
def workdir():
    path = harness.short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify_socket(workdir):
    listener = harness.NotifySocket(workdir / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def spawn(request, workdir):
    """spawn(argv, log_path, env=None) starts a daemon; every one still
    running at teardown is killed, and a failing test shows their logs."""
    if not harness.DAEMON_BIN.exists():
        pytest.fail(f"packstored is not built: {harness.DAEMON_BIN} is missing "
                    "(build the tree, or set PACKSTORE_BUILD_DIR)")
    started = []

    def start(argv, log_path, env=None):
        daemon = harness.Daemon(argv, log_path, env).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for daemon in started:
            print(f"--- log of {daemon.argv[0]} (pid {daemon.pid}) ---\n{daemon.log()[-6000:]}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
