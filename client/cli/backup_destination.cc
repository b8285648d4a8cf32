// BackupDestination: see backup_destination.h.
#include "client/cli/backup_destination.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>

#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

constexpr std::string_view kPrefix = "backup-";
constexpr std::string_view kPartialPrefix = ".backup-";
constexpr std::string_view kPartialSuffix = ".partial";
constexpr std::string_view kLink = "last-backup";
constexpr std::string_view kLockName = ".packstore-backup.lock";

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// <8 digits>T<6 digits>.<6 digits>Z[-<digits>]
bool IsTimestamp(std::string_view s) {
  if (s.size() < 23) return false;
  if (!AllDigits(s.substr(0, 8)) || s[8] != 'T' || !AllDigits(s.substr(9, 6)) || s[15] != '.' ||
      !AllDigits(s.substr(16, 6)) || s[22] != 'Z') {
    return false;
  }
  std::string_view rest = s.substr(23);
  return rest.empty() || (rest[0] == '-' && AllDigits(rest.substr(1)));
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return ErrnoStatus(ec.value(), StrCat("remove ", path));
  return absl::OkStatus();
}

}  // namespace

bool IsBackupName(std::string_view name) {
  return name.starts_with(kPrefix) && IsTimestamp(name.substr(kPrefix.size()));
}

absl::StatusOr<BackupDestination> BackupDestination::Open(const std::string& dest) {
  std::error_code ec;
  std::filesystem::create_directories(dest, ec);
  if (ec) return ErrnoStatus(ec.value(), StrCat("create the backup folder ", dest));
  std::string lock_path = JoinPath(dest, kLockName);
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd lock, OpenFile(lock_path, O_RDWR | O_CREAT, 0644));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          StrCat("another backup into ", dest, " is running (it holds ", lock_path, ")"));
    }
    return ErrnoStatus(errno, StrCat("lock ", lock_path));
  }
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dest));
  for (const std::string& name : names) {
    std::string_view n = name;
    if (n.starts_with(kPartialPrefix) && n.ends_with(kPartialSuffix) &&
        IsTimestamp(n.substr(kPartialPrefix.size(),
                             n.size() - kPartialPrefix.size() - kPartialSuffix.size()))) {
      PACKSTORE_RETURN_IF_ERROR(RemoveTree(JoinPath(dest, name)));
    }
  }
  return BackupDestination(dest, std::move(lock));
}

std::string BackupDestination::NewName() const {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()) %
                std::chrono::seconds(1);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char stamp[40];
  size_t n = std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &utc);
  std::snprintf(stamp + n, sizeof(stamp) - n, ".%06lldZ", static_cast<long long>(micros.count()));
  std::string base = StrCat(kPrefix, stamp);
  std::string name = base;
  for (int i = 2; PathExists(FinalPath(name)) || PathExists(PartialPath(name)); ++i) {
    name = StrCat(base, "-", i);
  }
  return name;
}

std::string BackupDestination::PartialPath(const std::string& name) const {
  return JoinPath(dir_, StrCat(".", name, kPartialSuffix));
}

std::string BackupDestination::FinalPath(const std::string& name) const {
  return JoinPath(dir_, name);
}

absl::Status BackupDestination::Publish(const std::string& name) const {
  PACKSTORE_RETURN_IF_ERROR(Rename(PartialPath(name), FinalPath(name)));
  return FsyncDir(dir_);
}

absl::Status BackupDestination::Link(const std::string& name) const {
  std::string temp = JoinPath(dir_, StrCat(".", kLink, ".", RandomHex(6)));
  if (::symlink(name.c_str(), temp.c_str()) != 0) {
    return ErrnoStatus(errno, StrCat("symlink ", temp));
  }
  absl::Status renamed = Rename(temp, JoinPath(dir_, kLink));
  if (!renamed.ok()) {
    ::unlink(temp.c_str());
    return renamed;
  }
  return FsyncDir(dir_);
}

absl::StatusOr<std::vector<std::string>> BackupDestination::Prune(const std::string& newest,
                                                                  int keep) const {
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir_));
  std::vector<std::string> older;
  for (const std::string& name : names) {
    struct stat st;
    if (name == newest || !IsBackupName(name)) continue;
    if (::lstat(JoinPath(dir_, name).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    older.push_back(name);
  }
  std::sort(older.begin(), older.end(), std::greater<>());
  std::vector<std::string> removed;
  for (size_t i = static_cast<size_t>(std::max(keep - 1, 0)); i < older.size(); ++i) {
    PACKSTORE_RETURN_IF_ERROR(RemoveTree(JoinPath(dir_, older[i])));
    removed.push_back(older[i]);
  }
  if (!removed.empty()) PACKSTORE_RETURN_IF_ERROR(FsyncDir(dir_));
  return removed;
}

}  // namespace packstore::cli
