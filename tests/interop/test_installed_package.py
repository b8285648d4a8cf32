"""The C++ client library as a user gets it: installed (cmake --install),
found by a project outside the tree with find_package(packstore) and with
pkg-config, and the program built each way run against a real packstored."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import daemon_support as support

EXAMPLE_DIR = support.REPO_ROOT / "examples" / "client"
BUILD_TIMEOUT = 600


def run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    run(["cmake", "--install", str(support.BUILD_DIR), "--prefix", str(prefix)])
    return prefix


def check_example(binary, daemon):
    texts = ["one object", "and a second one, a little longer"]
    env = dict(os.environ, PACKSTORE_SOCKET=str(daemon.socket))
    out = run([str(binary), *texts], env=env).stdout.splitlines()
    assert out == [f"{support.key_of(t.encode())}  {t}" for t in texts]
    # The objects are in the store, as any other client sees them.
    stub = daemon.new_stub()
    for text in texts:
        assert support.get_bytes(stub, support.key_of(text.encode())) == text.encode()


def test_installed_files(prefix):
    config = list(prefix.glob("lib*/cmake/packstore/packstoreConfig.cmake"))
    assert len(config) == 1, f"no CMake package under {prefix}"
    libdir = config[0].parents[2]
    assert list(libdir.glob("libpackstore_client.so*"))
    assert (prefix / "include" / "packstore" / "client.h").is_file()
    assert (libdir / "pkgconfig" / "packstore.pc").is_file()
    # The installed tool finds the installed library.
    run([str(prefix / "bin" / "packstore"), "--help"])
    assert list(prefix.glob("*bin/packstored"))


def test_find_package_build_runs_against_the_daemon(prefix, daemon, tmp_path):
    build = tmp_path / "build"
    cmake = ["cmake", "-S", str(EXAMPLE_DIR), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"]
    if shutil.which("ninja"):
        cmake += ["-G", "Ninja"]
    run(cmake)
    run(["cmake", "--build", str(build)])
    check_example(build / "packstore_example", daemon)


def test_pkg_config_build_runs_against_the_daemon(prefix, daemon, tmp_path):
    pc_dirs = [str(p) for p in prefix.glob("lib*/pkgconfig")]
    env = dict(os.environ, PKG_CONFIG_PATH=os.pathsep.join(pc_dirs))
    flags = run(["pkg-config", "--cflags", "--libs", "packstore"], env=env).stdout.split()
    libdir = next(flag[2:] for flag in flags if flag.startswith("-L"))
    binary = tmp_path / "packstore_example"
    run(["c++", "-std=c++20", str(EXAMPLE_DIR / "main.cc"), "-o", str(binary), *flags,
         f"-Wl,-rpath,{libdir}"])
    check_example(binary, daemon)
