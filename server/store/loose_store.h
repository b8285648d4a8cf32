// LooseStore: objects stored one per file, loose/<key[:P]>/<key[P:]>
// (docs/format.md, "Loose objects"). Loose objects are never compressed.
//
// A write streams the object into sandbox/ while hashing it, fsyncs the
// file, renames it into place (replacing an existing copy, whose content is
// the same by construction) and fsyncs the directory that received the
// entry, so an acknowledged loose object survives a crash. While a write is
// in progress its sandbox file holds an flock, which tells start-up
// recovery and clean that it is not abandoned.
//
// Thread-safety: all methods may run concurrently from any thread and from
// other processes (disk-objectstore's included).
//
// Keys passed in must have been checked with ValidateKey.
#ifndef PACKSTORE_SERVER_STORE_LOOSE_STORE_H_
#define PACKSTORE_SERVER_STORE_LOOSE_STORE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/hash_key.h"
#include "server/store/file_io.h"
#include "server/store/object_source.h"

namespace packstore {

struct WrittenObject {
  std::string key;
  uint64_t size = 0;
};

class LooseStore {
 public:
  LooseStore(std::string container_dir, int prefix_len, HashType hash_type);

  std::string PathFor(std::string_view key) const;

  // Streams `source` into a new loose object and returns its key and size.
  // RESOURCE_EXHAUSTED when the disk is full; the source's own error if it
  // fails. On any error nothing is left behind but, at worst, a sandbox file
  // that recovery removes.
  absl::StatusOr<WrittenObject> Write(ObjectSource& source);

  // Opens the loose object for reading; NOT_FOUND if there is none.
  absl::StatusOr<UniqueFd> Open(std::string_view key) const;
  bool Exists(std::string_view key) const;
  // NOT_FOUND if there is none.
  absl::StatusOr<uint64_t> Size(std::string_view key) const;
  // Removes the loose file; OK if there was none.
  absl::Status Delete(std::string_view key) const;

  // Calls `on_object(key)` for every loose object and `on_stray(path)` for
  // every entry of loose/ that is not a valid object file (wrong name,
  // length or case). Stops at the first error `on_object` returns.
  absl::Status ForEach(const std::function<absl::Status(const std::string&)>& on_object,
                       const std::function<void(const std::string&)>& on_stray) const;

  // Removes sandbox files no writer holds: packstore's own at once (a
  // crashed write), others (disk-objectstore's have no lock) once older than
  // `foreign_age_seconds`. Returns how many were removed.
  absl::StatusOr<uint64_t> CleanSandbox(int64_t foreign_age_seconds) const;

 private:
  const std::string loose_dir_;
  const std::string sandbox_dir_;
  const int prefix_len_;
  const HashType hash_type_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_LOOSE_STORE_H_
