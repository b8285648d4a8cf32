// Object keys: the lowercase hex digest of an object's uncompressed content.
//
// A key that comes from outside (a client, a file name, an index row) is
// validated here before it is used to build a path or a query: exact length
// for the hash type, lowercase hex only. Nothing else in the tree parses keys.
//
// Thread-safety: free functions, no state.
//
//   PACKSTORE_RETURN_IF_ERROR(ValidateKey(key, HashType::kSha256));
#ifndef PACKSTORE_COMMON_HASH_KEY_H_
#define PACKSTORE_COMMON_HASH_KEY_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore {

// The digests a container may use (config.json "hash_type").
enum class HashType { kSha256, kSha1 };

// 64 for sha256, 40 for sha1.
size_t HexKeyLength(HashType type);

// "sha256" or "sha1", as written in config.json.
std::string_view HashTypeName(HashType type);

// Parses a config.json hash_type. INVALID_ARGUMENT for anything else.
absl::StatusOr<HashType> ParseHashType(std::string_view name);

// OK when `key` is exactly HexKeyLength(type) characters of [0-9a-f].
// INVALID_ARGUMENT otherwise, with a message that quotes (a prefix of) the key.
absl::Status ValidateKey(std::string_view key, HashType type);

}  // namespace packstore

#endif  // PACKSTORE_COMMON_HASH_KEY_H_
