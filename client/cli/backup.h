// BackupStore: a consistent copy of a live store (the daemon keeps serving
// and writing) into DEST/backup-<UTC timestamp>/, pointed at by the
// symbolic link DEST/last-backup, keeping the newest `keep` backups.
//
// The store's files are read directly (the folder Status reports), so the
// caller must be able to read them. The copy relies on the format's rules
// (docs/format.md): loose objects are immutable files, packs are append-only
// and never rewritten in place, pack bytes are durable before the index rows
// that point at them commit, and an object leaves the loose folder only
// after its rows are committed. Hence the order:
//   1. config.json, then every loose object (each into the backup's
//      sandbox/, fsync'd, renamed into place);
//   2. every pack file opened and held, its inode noted;
//   3. an online SQLite backup of packs.idx (one read transaction);
//   4. each pack the snapshot points into, copied up to the end of its last
//      row, after checking that the file under its name is still the inode
//      held in step 2: if not (a repack replaced or removed it), steps 1-4
//      run again (loose copies and unchanged packs are kept), a few times,
//      then the backup fails with ABORTED.
// Every object acknowledged before the backup started is in it: loose when
// step 1 saw it, else packed by then and in the snapshot. The backup is
// written into DEST/.backup-<timestamp>.partial, fsync'd throughout, and
// renamed into place only when complete; it is then opened with the engine
// and validated (unless asked not to). Only a backup without issues moves
// last-backup and prunes older backups.
//
// Errors: PERMISSION_DENIED (with advice) when the store folder cannot be
// read; FAILED_PRECONDITION when another backup into DEST runs, or the
// daemon reports a relative store folder; ABORTED when packs kept being
// replaced; the errors of the file system and of SQLite otherwise.
//
// Thread-safety: a free function; one backup per DEST at a time (a lock
// file in DEST enforces it).
#ifndef PACKSTORE_CLIENT_CLI_BACKUP_H_
#define PACKSTORE_CLIENT_CLI_BACKUP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/store.h"

namespace packstore::cli {

struct BackupRequest {
  std::string dest;
  int keep = 3;          // backups kept in DEST, this one included (>= 1)
  bool validate = true;  // open and validate the backup once written
  int max_attempts = 5;
  int busy_timeout_ms = 10000;  // for the index snapshot
};

struct BackupProgress {
  ProgressFn files;     // loose objects copied (no total)
  ProgressFn bytes;     // pack bytes copied
  ProgressFn validate;  // the validation's own phases
};

struct BackupReport {
  std::string source;  // the store folder
  std::string path;    // DEST/backup-<timestamp>
  uint64_t loose_objects = 0;
  uint64_t packs = 0;
  uint64_t pack_bytes = 0;
  uint64_t index_rows = 0;
  int attempts = 0;
  std::optional<ValidateSummary> validation;
  bool linked = false;               // last-backup points at it now
  std::vector<std::string> removed;  // older backups deleted
};

absl::StatusOr<BackupReport> BackupStore(Store& store, const BackupRequest& request,
                                         const BackupProgress& progress);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_BACKUP_H_
