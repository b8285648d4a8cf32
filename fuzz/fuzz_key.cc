// Key parsing (common/hash_key.h, common/codec.h): every string a client,
// a file name or config.json can hand to ValidateKey, ParseHashType or
// ParseCodec. Checks, for any input:
//   - ValidateKey accepts exactly HexKeyLength(type) characters of [0-9a-f]
//     (checked against a reference written here), for sha256 and sha1; a
//     refusal is INVALID_ARGUMENT with a message of bounded size naming the
//     hash type and the expected length;
//   - a digest the Hasher computes is a key ValidateKey accepts;
//   - ParseHashType and ParseCodec accept only canonical names:
//     HashTypeName / CodecName of what they return gives the input back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/codec.h"
#include "common/hash_key.h"
#include "common/hasher.h"
#include "common/str_cat.h"
#include "fuzz/fuzz_check.h"

namespace packstore::fuzz {
namespace {

// A refusal quotes at most 80 bytes of the key, each escaped to at most 4
// characters, plus the size and a fixed sentence.
constexpr size_t kMaxKeyErrorBytes = 80 * 4 + 200;

bool IsLowerHexKey(std::string_view key, size_t length) {
  if (key.size() != length) return false;
  for (char c : key) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void CheckValidateKey(std::string_view key, HashType type) {
  const absl::Status status = ValidateKey(key, type);
  const bool expected = IsLowerHexKey(key, HexKeyLength(type));
  FUZZ_CHECK(status.ok() == expected,
             StrCat("ValidateKey(", HashTypeName(type), ") gave ", status.ToString(),
                    " for a key of ", key.size(), " bytes"));
  if (status.ok()) return;
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  const std::string message(status.message());
  FUZZ_CHECK(message.size() <= kMaxKeyErrorBytes,
             StrCat("a ", message.size(), "-byte error for a ", key.size(), "-byte key"));
  FUZZ_CHECK(message.find(StrCat("invalid ", HashTypeName(type), " key ")) == 0,
             message);
  FUZZ_CHECK(message.ends_with(StrCat("expected ", HexKeyLength(type),
                                      " lowercase hex characters")),
             message);
}

void CheckHashType(std::string_view name) {
  const absl::StatusOr<HashType> type = ParseHashType(name);
  FUZZ_CHECK(type.ok() == (name == "sha256" || name == "sha1"), type.status().ToString());
  if (type.ok()) {
    FUZZ_CHECK(HashTypeName(*type) == name, std::string(name));
  } else {
    FUZZ_CHECK(type.status().code() == absl::StatusCode::kInvalidArgument,
               type.status().ToString());
    FUZZ_CHECK(type.status().message().size() <= kMaxKeyErrorBytes, "unbounded hash_type error");
  }
}

void CheckCodec(std::string_view name) {
  const absl::StatusOr<Codec> codec = ParseCodec(name);
  if (!codec.ok()) {
    FUZZ_CHECK(codec.status().code() == absl::StatusCode::kInvalidArgument,
               codec.status().ToString());
    return;
  }
  FUZZ_CHECK(CodecName(*codec) == name, StrCat("ParseCodec accepted a non-canonical name, ",
                                               CodecName(*codec)));
  const int max_level = codec->kind == CodecKind::kZlib ? 9 : 19;
  FUZZ_CHECK(codec->level >= 1 && codec->level <= max_level, CodecName(*codec));
}

}  // namespace
}  // namespace packstore::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace packstore;
  using namespace packstore::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  for (HashType type : {HashType::kSha256, HashType::kSha1}) {
    CheckValidateKey(input, type);
    // The first HexKeyLength bytes too, so that long inputs also reach the
    // character check.
    CheckValidateKey(input.substr(0, HexKeyLength(type)), type);
    const std::string digest = Hasher::Hash(type, input);
    FUZZ_CHECK(ValidateKey(digest, type).ok(), digest);
  }
  CheckHashType(input);
  CheckCodec(input);
  return 0;
}
