// ImportFolder: copies the objects of a container folder into any Store
// (with the daemon: the tool's import). The source is opened shared, so
// nothing in it changes and a daemon may keep serving it.
//
// The source's keys are listed in pages; the ones the target lacks are read
// in storage order and written in batches (small objects through PutMany,
// larger ones streamed in constant memory). The key the target computes is
// compared with the source's: a source object whose content is not its key
// fails the import with DATA_LOSS, naming it (objects copied before it stay).
// INVALID_ARGUMENT when the two use different hash types.
//
// Thread-safety: a free function; the stores are used from the calling
// thread only.
#ifndef PACKSTORE_CLIENT_CLI_IMPORTER_H_
#define PACKSTORE_CLIENT_CLI_IMPORTER_H_

#include <string>

#include "absl/status/statusor.h"
#include "client/cli/store.h"

namespace packstore::cli {

absl::StatusOr<ImportSummary> ImportFolder(const std::string& source_dir, Store& target,
                                           const ProgressFn& progress);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_IMPORTER_H_
