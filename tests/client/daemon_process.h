// A real packstored for the client library's tests: started on a fresh
// store and socket in a temporary folder, stopped (SIGTERM, then SIGKILL)
// when destroyed. The binary is PACKSTORE_PACKSTORED, set by CMake.
// Failures (it does not start, or does not stop within 20 s) are reported
// to GoogleTest with the daemon's log, not returned.
//
// Thread-safety: one thread owns a DaemonProcess.
#ifndef PACKSTORE_TESTS_CLIENT_DAEMON_PROCESS_H_
#define PACKSTORE_TESTS_CLIENT_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace packstore::testing {

class DaemonProcess {
 public:
  // Starts packstored with the suite's flags plus `extra_flags` and waits
  // until its socket exists; fails the test (ADD_FAILURE) when it does not
  // come up within 30 s.
  explicit DaemonProcess(std::vector<std::string> extra_flags = {});
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  std::string socket() const { return (dir_ / "packstored.sock").string(); }
  std::string store() const { return (dir_ / "store").string(); }
  bool running() const { return pid_ > 0; }
  // SIGKILL, and wait for it.
  void Kill();
  // The daemon's log so far.
  std::string Log() const;

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace packstore::testing

#endif  // PACKSTORE_TESTS_CLIENT_DAEMON_PROCESS_H_
