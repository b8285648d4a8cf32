// ContainerConfig: the contents of a container's config.json (docs/format.md).
//
// config.json is written once, at init, as one line in disk-objectstore's
// exact form (Python json.dumps with default separators, keys in a fixed
// order, no trailing newline). Parsing accepts any valid JSON object, ignores
// keys it does not know (as disk-objectstore does) and checks every value.
//
// Thread-safety: a value type; free functions are thread-safe.
//
//   PACKSTORE_ASSIGN_OR_RETURN(ContainerConfig c, ParseConfigJson(text));
//   std::string text = SerializeConfigJson(c);
#ifndef PACKSTORE_SERVER_STORE_CONFIG_H_
#define PACKSTORE_SERVER_STORE_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/codec.h"
#include "common/hash_key.h"

namespace packstore {

struct ContainerConfig {
  int container_version = 1;
  // Characters of the key used as loose/ subfolder name (0: no subfolder).
  int loose_prefix_len = 2;
  // A pack is appended to until it is at least this large (bytes).
  int64_t pack_size_target = int64_t{4} << 30;
  HashType hash_type = HashType::kSha256;
  // 32 lowercase hex characters, random at init.
  std::string container_id;
  Codec codec;  // "compression_algorithm"
};

// The exact config.json text for `config`.
std::string SerializeConfigJson(const ContainerConfig& config);

// Parses and checks config.json. INVALID_ARGUMENT (message names the key and
// the accepted values) for malformed JSON, a missing key, a value of the
// wrong type or out of range, an unknown hash_type or compression_algorithm,
// or a container_version other than 1.
absl::StatusOr<ContainerConfig> ParseConfigJson(std::string_view text);

// A new random container_id (uuid4 hex, as disk-objectstore makes it).
std::string NewContainerId();

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_CONFIG_H_
