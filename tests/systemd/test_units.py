"""The systemd files: the units pass `systemd-analyze verify`, the
sysusers.d and tmpfiles.d files do what they say in a scratch root, and the
install rules put everything where systemd looks."""

import os
import re
import shutil
import subprocess

import pytest

import systemd_harness as harness

UNITS = ("packstored.socket", "packstored.service")


def configured_units():
    """The units as CMake configured them for this build."""
    paths = [harness.CONFIGURED_UNITS_DIR / name for name in UNITS]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        pytest.fail(f"configured units missing: {missing} (configure the build first)")
    return paths


def unit_settings(path):
    """[(section, key, value)] of a unit file."""
    settings, section = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def setting(path, section, key):
    values = [v for s, k, v in unit_settings(path) if s == section and k == key]
    assert values, f"{path.name} has no {key}= in [{section}]"
    return values[-1]


def copy_units_for_verify(destination, exec_path):
    """The configured units in `destination`, ExecStart pointing at
    `exec_path` (verify insists the binary exists and is executable)."""
    copies = []
    for path in configured_units():
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={exec_path}", path.read_text(), flags=re.M)
        copy = destination / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def verify(paths):
    # --man=no: Documentation= pages are not installed in a build tree.
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def require_tool():
    def require(name):
        if shutil.which(name) is None:
            pytest.fail(f"{name} is not installed (Debian package systemd)")
    return require


def test_units_pass_systemd_analyze_verify(workdir, require_tool):
    require_tool("systemd-analyze")
    copies = copy_units_for_verify(workdir, harness.DAEMON_BIN)
    result = verify(copies)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Warnings (unknown keys, bad values) do not change the exit code.
    complaints = [line for line in output.splitlines() if "packstored." in line]
    assert not complaints, output


def test_verify_does_check_here(workdir, require_tool):
    """A control: in this environment verify does reject a broken unit, so
    the pass above means something."""
    require_tool("systemd-analyze")
    copies = copy_units_for_verify(workdir, workdir / "no-such-binary")
    result = verify(copies)
    assert result.returncode != 0, result.stdout + result.stderr


def test_units_say_what_the_daemon_expects():
    socket_unit, service_unit = configured_units()
    assert setting(service_unit, "Service", "Type") == "notify"
    assert setting(service_unit, "Service", "NotifyAccess") == "main"
    exec_start = setting(service_unit, "Service", "ExecStart").split()
    assert exec_start[0].endswith("/sbin/packstored")
    assert exec_start[1:3] == ["--config", "/etc/packstore/packstored.conf"]
    assert setting(service_unit, "Service", "User") == "packstore"
    assert setting(service_unit, "Service", "WatchdogSec") == "30"
    assert setting(service_unit, "Unit", "Requires") == "packstored.socket"
    # The daemon adopts the descriptor by this name, and binds this path
    # by default.
    assert setting(socket_unit, "Socket", "FileDescriptorName") == "packstore"
    assert setting(socket_unit, "Socket", "ListenStream") == "/run/packstore/packstore.sock"
    assert setting(socket_unit, "Socket", "SocketMode") == "0660"
    help_text = subprocess.run([harness.DAEMON_BIN, "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert "--socket PATH=/run/packstore/packstore.sock" in help_text


def test_sysusers_creates_the_users(workdir, require_tool):
    require_tool("systemd-sysusers")
    root = workdir / "root"
    (root / "etc").mkdir(parents=True)
    conf = harness.SOURCE_SYSTEMD_DIR / "sysusers.d" / "packstore.conf"
    subprocess.run(["systemd-sysusers", f"--root={root}", str(conf)], check=True,
                   capture_output=True, timeout=60)
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (root / "etc" / "group").read_text().splitlines()}
    assert "packstore" in passwd
    user = passwd["packstore"]
    assert int(user[2]) < 1000, "a system user"
    assert user[5] == "/var/lib/packstore"
    assert user[6].endswith("nologin")
    assert {"packstore", "packstore-clients"} <= groups


def test_tmpfiles_creates_the_socket_folder(workdir, require_tool):
    if os.geteuid() != 0:
        pytest.skip("giving the folder to the packstore user needs root")
    require_tool("systemd-sysusers")
    require_tool("systemd-tmpfiles")
    root = workdir / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(["systemd-sysusers", f"--root={root}",
                    str(harness.SOURCE_SYSTEMD_DIR / "sysusers.d" / "packstore.conf")],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                    str(harness.SOURCE_SYSTEMD_DIR / "tmpfiles.d" / "packstore.conf")],
                   check=True, capture_output=True, timeout=60)
    uid = next(int(line.split(":")[2]) for line in (root / "etc" / "passwd").read_text().splitlines()
               if line.startswith("packstore:"))
    folder = root / "run" / "packstore"
    stat = folder.stat()
    assert folder.is_dir()
    assert stat.st_mode & 0o7777 == 0o755
    assert stat.st_uid == uid


def test_install_rules_put_files_where_systemd_looks(workdir):
    script = harness.CONFIGURED_UNITS_DIR / "cmake_install.cmake"
    if not script.exists():
        pytest.fail(f"{script} is missing (configure the build first)")
    prefix = workdir / "prefix"
    subprocess.run(["cmake", f"-DCMAKE_INSTALL_PREFIX={prefix}", "-P", str(script)],
                   check=True, capture_output=True, timeout=60)
    for relative in ("lib/systemd/system/packstored.service",
                     "lib/systemd/system/packstored.socket",
                     "lib/sysusers.d/packstore.conf",
                     "lib/tmpfiles.d/packstore.conf"):
        assert (prefix / relative).is_file(), relative
    installed = (prefix / "lib/systemd/system/packstored.service").read_text()
    assert "@" not in setting(prefix / "lib/systemd/system/packstored.service", "Service",
                              "ExecStart"), installed
