// Parsers of the Store interface's options. See store.h.
#include "client/cli/store.h"

#include "common/str_cat.h"

namespace packstore::cli {

absl::StatusOr<Placement> ParsePlacement(std::string_view name) {
  if (name == "loose") return Placement::kLoose;
  if (name == "packed" || name == "pack") return Placement::kPacked;
  if (name == "auto") return Placement::kAuto;
  return absl::InvalidArgumentError(
      StrCat("unknown placement \"", name, "\": use loose, packed or auto"));
}

absl::StatusOr<CompressChoice> ParseCompressChoice(std::string_view name) {
  if (name == "no") return CompressChoice::kNo;
  if (name == "yes") return CompressChoice::kYes;
  if (name == "auto") return CompressChoice::kAuto;
  return absl::InvalidArgumentError(
      StrCat("unknown compression \"", name, "\": use no, yes or auto"));
}

}  // namespace packstore::cli
