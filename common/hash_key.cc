// Object keys: hash types and key validation.
#include "common/hash_key.h"

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/escaping.h"
#include "common/str_cat.h"

namespace packstore {
namespace {

// Enough to recognise a key in a log line; a hostile caller must not be able
// to blow up error messages with a megabyte "key".
constexpr size_t kQuotedKeyPrefix = 80;

std::string QuoteKey(std::string_view key) {
  const std::string_view prefix = key.substr(0, kQuotedKeyPrefix);
  std::string quoted =
      StrCat("\"", absl::CHexEscape(absl::string_view(prefix.data(), prefix.size())), "\"");
  if (key.size() > kQuotedKeyPrefix) quoted += StrCat("... (", key.size(), " bytes)");
  return quoted;
}

// 1 for the characters a key may hold. Every key a client sends is checked
// (10,000 per bulk call, some twice): a table and a branch-free loop the
// compiler vectorises keep that out of profiles.
constexpr std::array<uint8_t, 256> kLowerHex = [] {
  std::array<uint8_t, 256> table{};
  for (char c = '0'; c <= '9'; ++c) table[static_cast<uint8_t>(c)] = 1;
  for (char c = 'a'; c <= 'f'; ++c) table[static_cast<uint8_t>(c)] = 1;
  return table;
}();

bool AllLowerHex(std::string_view key) {
  uint8_t all = 1;
  for (char c : key) all &= kLowerHex[static_cast<uint8_t>(c)];
  return all != 0;
}

}  // namespace

size_t HexKeyLength(HashType type) {
  switch (type) {
    case HashType::kSha256:
      return 64;
    case HashType::kSha1:
      return 40;
  }
  return 0;
}

std::string_view HashTypeName(HashType type) {
  switch (type) {
    case HashType::kSha256:
      return "sha256";
    case HashType::kSha1:
      return "sha1";
  }
  return "unknown";
}

absl::StatusOr<HashType> ParseHashType(std::string_view name) {
  if (name == "sha256") return HashType::kSha256;
  if (name == "sha1") return HashType::kSha1;
  return absl::InvalidArgumentError(
      StrCat("unknown hash_type ", QuoteKey(name), "; expected \"sha256\" or \"sha1\""));
}

absl::Status ValidateKey(std::string_view key, HashType type) {
  const size_t expected = HexKeyLength(type);
  if (key.size() == expected && AllLowerHex(key)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(StrCat("invalid ", HashTypeName(type), " key ", QuoteKey(key),
                                           ": expected ", expected, " lowercase hex characters"));
}

}  // namespace packstore
