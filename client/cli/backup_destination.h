// BackupDestination: the folder backups go into (backup.h).
//
//   DEST/backup-20250101T120000.123456Z/   a complete backup (a container)
//   DEST/.backup-<timestamp>.partial/      one being written
//   DEST/last-backup -> backup-<timestamp> the newest good one
//   DEST/.packstore-backup.lock            flock'd while a backup runs
//
// Only names of exactly these forms are ever removed.
//
// Errors: FAILED_PRECONDITION when another backup holds the lock; the file
// system's errors, naming the path.
//
// Thread-safety: one thread at a time; one process per DEST (the lock).
#ifndef PACKSTORE_CLIENT_CLI_BACKUP_DESTINATION_H_
#define PACKSTORE_CLIENT_CLI_BACKUP_DESTINATION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/store/file_io.h"

namespace packstore::cli {

class BackupDestination {
 public:
  // Creates DEST (and its parents) if needed, takes its lock, and removes
  // partial backups left by interrupted runs.
  static absl::StatusOr<BackupDestination> Open(const std::string& dest);

  const std::string& dir() const { return dir_; }
  // A name no backup in DEST has: backup-<UTC time to the microsecond>Z.
  std::string NewName() const;
  std::string PartialPath(const std::string& name) const;
  std::string FinalPath(const std::string& name) const;
  // Renames the partial folder of `name` into place and fsyncs DEST.
  absl::Status Publish(const std::string& name) const;
  // Points DEST/last-backup at `name`, atomically.
  absl::Status Link(const std::string& name) const;
  // Deletes the oldest backups so that `keep` remain, `newest` among them;
  // returns the names deleted.
  absl::StatusOr<std::vector<std::string>> Prune(const std::string& newest, int keep) const;

 private:
  BackupDestination(std::string dir, UniqueFd lock)
      : dir_(std::move(dir)), lock_(std::move(lock)) {}
  std::string dir_;
  UniqueFd lock_;
};

// Whether `name` is one of a backup folder (backup-<timestamp>Z[-n]).
bool IsBackupName(std::string_view name);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_BACKUP_DESTINATION_H_
